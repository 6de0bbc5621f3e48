#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/model.h"
#include "cli.h"

static void inspect_usage(FILE *out)
{
    fprintf(out,
            "usage: bitplan inspect --model DIR [--json]\n"
            "\n"
            "List every tensor of a Hugging Face model directory (config.json plus\n"
            "model.safetensors or a sharded index): name, dtype, shape, parameters\n"
            "and bytes, then the totals.\n"
            "\n"
            "options:\n"
            "  --model DIR   model directory (required)\n"
            "  --json        print one JSON object instead of a table\n"
            "  -h, --help    show this help\n");
}

static void print_shape(FILE *out, const bp_tensor_info *t)
{
    fputc('[', out);
    for (int d = 0; d < t->ndim; d++)
        fprintf(out, "%s%" PRId64, d ? ", " : "", t->shape[d]);
    fputc(']', out);
}

/* Tensor names come from the file; escape them for JSON output. */
static void print_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

int bp_cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model_dir = NULL;
    int json = 0;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'j': json = 1; break;
        case 'h': inspect_usage(stdout); return BP_EXIT_OK;
        default:
            return bp_cli_usage_error("inspect", "unknown or incomplete option '%s'",
                                      argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bp_cli_usage_error("inspect", "unexpected argument '%s'", argv[optind]);
    if (!model_dir)
        return bp_cli_usage_error("inspect", "--model DIR is required");

    bp_error err;
    bp_error_clear(&err);
    bp_model *m = NULL;
    if (bp_model_open(model_dir, &m, &err) != BP_OK)
        return bp_cli_fail("inspect", &err);

    size_t n = bp_model_count(m);
    uint64_t params = 0, bytes = 0;
    if (json) {
        printf("{\"model\": ");
        print_json_string(stdout, model_dir);
        printf(", \"tensors\": [");
    } else {
        printf("%-56s %-5s %-16s %12s %14s\n", "tensor", "dtype", "shape", "params", "bytes");
    }
    for (size_t i = 0; i < n; i++) {
        const bp_tensor_info *t = bp_model_tensor(m, i);
        params += t->numel;
        bytes += t->nbytes;
        if (json) {
            printf("%s\n  {\"name\": ", i ? "," : "");
            print_json_string(stdout, t->name);
            printf(", \"dtype\": \"%s\", \"shape\": ", bp_dtype_name(t->dtype));
            print_shape(stdout, t);
            printf(", \"params\": %" PRIu64 ", \"bytes\": %" PRIu64 "}", t->numel, t->nbytes);
        } else {
            char shape[64];
            FILE *s = fmemopen(shape, sizeof shape, "w");
            if (s) {
                print_shape(s, t);
                fclose(s);
            } else {
                shape[0] = '\0';
            }
            printf("%-56s %-5s %-16s %12" PRIu64 " %14" PRIu64 "\n", t->name,
                   bp_dtype_name(t->dtype), shape, t->numel, t->nbytes);
        }
    }
    if (json)
        printf("\n], \"n_tensors\": %zu, \"params\": %" PRIu64 ", \"bytes\": %" PRIu64 "}\n",
               n, params, bytes);
    else
        printf("%zu tensors, %" PRIu64 " parameters, %" PRIu64 " bytes (%.3f GB)\n", n,
               params, bytes, (double)bytes / 1e9);
    bp_model_destroy(&m);
    return BP_EXIT_OK;
}
