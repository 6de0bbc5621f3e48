/* bitplan keygen: make a CURVE key pair (docs/security.md). */
#include <getopt.h>
#include <stdio.h>

#include "bitplan/coord.h"
#include "cli.h"

static void keygen_usage(FILE *out)
{
    fprintf(out,
            "usage: bitplan keygen --out PREFIX [--force]\n"
            "\n"
            "Make a CURVE key pair for the coordinator, a worker or a client:\n"
            "PREFIX.pub (public key, give it to the other side) and PREFIX.key\n"
            "(secret key, mode 0600, keep it). See docs/security.md.\n"
            "\n"
            "options:\n"
            "  --out PREFIX   output file prefix (required)\n"
            "  --force        overwrite existing files\n"
            "  -h, --help     show this help\n");
}

int bp_cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, 'o'},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *prefix = NULL;
    int force = 0;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': prefix = optarg; break;
        case 'f': force = 1; break;
        case 'h': keygen_usage(stdout); return BP_EXIT_OK;
        default:
            return bp_cli_usage_error("keygen", "unknown or incomplete option '%s'",
                                      argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bp_cli_usage_error("keygen", "unexpected argument '%s'", argv[optind]);
    if (!prefix)
        return bp_cli_usage_error("keygen", "--out PREFIX is required");
    bp_error err;
    bp_error_clear(&err);
    if (bp_curve_keygen(prefix, force, &err) != BP_OK)
        return bp_cli_fail("keygen", &err);
    printf("%s.pub\n%s.key\n", prefix, prefix);
    return BP_EXIT_OK;
}
