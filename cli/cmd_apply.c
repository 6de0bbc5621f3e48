#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/apply.h"
#include "bitplan/calib_input.h"
#include "bitplan/evaluate.h"
#include "bitplan/llama.h"
#include "cli.h"

static void apply_usage(FILE *out)
{
    fprintf(out,
            "usage: bitplan apply --plan PLAN --model DIR --out OUTDIR [--dequantized]\n"
            "                     [--text F | --tokens F | --stats F] [--ctx N] [--calib-seqs N]\n"
            "\n"
            "Quantize a model according to a plan with bitplan's kernels, one tensor\n"
            "at a time. OUTDIR receives config.json, bitplan_plan.json and\n"
            "model.safetensors, in which each planned tensor is packed (U8, exactly the\n"
            "plan's bytes; layouts in docs/formats.md, file in docs/packed-model.md)\n"
            "and every other tensor is copied. The model's content must match the\n"
            "hash recorded in the plan.\n"
            "\n"
            "Tensors the plan quantizes with GPTQ need the calibration input the plan\n"
            "was made with (same --text/--tokens, --ctx and --calib-seqs, or the same\n"
            "--stats file); a different input is refused, so the weights written are\n"
            "exactly those whose errors the plan predicted.\n"
            "\n"
            "options:\n"
            "  --plan PLAN          plan file written by 'bitplan plan'\n"
            "  --model DIR          the model the plan was made for\n"
            "  --out OUTDIR         output directory (created if missing)\n"
            "  --dequantized        write a plain model directory instead: every planned\n"
            "                       weight replaced by its dequantized value, in the\n"
            "                       source dtype, so any Llama reader can evaluate it\n"
            "  --text FILE          calibration text (byte-level models)\n"
            "  --tokens FILE        calibration token ids (uint32 LE, or JSON array *.json)\n"
            "  --stats FILE         calibration statistics file\n"
            "  --ctx N              calibration sequence length (default 128)\n"
            "  --calib-seqs N       calibration sequences (default 64)\n"
            "  --method rtn|gptq|gptq_act\n"
            "                       quantize every planned tensor this way instead of the\n"
            "                       plan's own method (the plan's predicted errors then no\n"
            "                       longer describe the output)\n"
            "  --no-model-hash      do not check the model's content hash\n"
            "  --quiet              no progress on stderr\n"
            "  -h, --help           show this help\n");
}

int bp_cmd_apply(int argc, char **argv)
{
    enum { O_PLAN = 1, O_MODEL, O_OUT, O_DEQ, O_NOHASH, O_QUIET, O_METHOD };
    static const struct option opts[] = {
        {"plan", required_argument, NULL, O_PLAN},
        {"model", required_argument, NULL, O_MODEL},
        {"out", required_argument, NULL, O_OUT},
        {"dequantized", no_argument, NULL, O_DEQ},
        {"no-model-hash", no_argument, NULL, O_NOHASH},
        {"quiet", no_argument, NULL, O_QUIET},
        {"method", required_argument, NULL, O_METHOD},
        BP_CLI_CALIB_LONGOPTS(""),
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *plan_path = NULL, *model_dir = NULL, *out_dir = NULL;
    bp_apply_options o;
    memset(&o, 0, sizeof o);
    bp_calib_spec cs;
    bp_calib_spec_default(&cs);
    int method = -1;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_PLAN: plan_path = optarg; break;
        case O_MODEL: model_dir = optarg; break;
        case O_OUT: out_dir = optarg; break;
        case O_DEQ: o.dequantized = 1; break;
        case O_NOHASH: o.skip_model_hash = 1; break;
        case O_QUIET: o.quiet = 1; break;
        case O_METHOD:
            method = bp_table_method_from_name(optarg);
            if (method < 0)
                return bp_cli_usage_error("apply", "--method: '%s' is not rtn, gptq or gptq_act", optarg);
            break;
        case 'h': apply_usage(stdout); return BP_EXIT_OK;
        default: {
            int h = bp_cli_calib_option("apply", c, optarg, &cs);
            if (h > 0)
                break;
            if (h < 0)
                return BP_EXIT_USAGE;
            return bp_cli_usage_error("apply", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
        }
    }
    if (optind < argc)
        return bp_cli_usage_error("apply", "unexpected argument '%s'", argv[optind]);
    if (!plan_path || !model_dir || !out_dir)
        return bp_cli_usage_error("apply", "--plan, --model and --out are required");
    if (cs.text_path && cs.tokens_path)
        return bp_cli_usage_error("apply", "give --text or --tokens, not both");
    cs.quiet = o.quiet;

    bp_error err;
    bp_error_clear(&err);
    bp_plan *plan = NULL;
    bp_model *model = NULL;
    bp_llama *llama = NULL;
    bp_calib *calib = NULL;
    int rc = bp_plan_read(plan_path, &plan, &err);
    if (rc == BP_OK)
        rc = bp_model_open(model_dir, &model, &err);
    if (rc == BP_OK && bp_calib_spec_given(&cs)) {
        rc = bp_llama_new(model, &llama, &err);
        if (rc == BP_OK)
            rc = bp_calib_open(&cs, llama, NULL, 0, &calib, &err);
        if (rc == BP_OK) {
            o.calib = calib;
            o.cfg = bp_llama_get_config(llama);
        }
    }
    if (rc == BP_OK && method >= 0) {
        bp_plan *p2 = NULL;
        rc = bp_plan_override_method(plan, (bp_quant_method)method, calib, &p2, &err);
        bp_plan_destroy(&plan);
        plan = p2;
    }
    if (rc == BP_OK)
        rc = bp_apply_model(plan, model, out_dir, &o, &err);
    bp_calib_destroy(&calib);
    bp_llama_destroy(&llama);
    bp_model_destroy(&model);
    bp_plan_destroy(&plan);
    if (rc != BP_OK)
        return bp_cli_fail("apply", &err);
    if (!o.quiet)
        fprintf(stderr, "bitplan apply: wrote %s\n", out_dir);
    return BP_EXIT_OK;
}
