#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/calib_input.h"
#include "bitplan/evaluate.h"
#include "bitplan/llama.h"
#include "bitplan/tokens.h"
#include "cli.h"

static void eval_usage(FILE *out)
{
    fprintf(out,
            "usage: bitplan eval --model DIR [--plan PLAN] (--text F | --tokens F) [options]\n"
            "\n"
            "Mean next-token NLL (nats per token) and perplexity of the model on a\n"
            "token stream, in windows of --ctx tokens with a fresh context each (the\n"
            "protocol of docs/calibration.md). With --plan, the plan is applied in\n"
            "memory with the same kernels as 'bitplan apply', and the mean\n"
            "KL(full precision || quantized) over next-token distributions and the\n"
            "NLL increase are reported too.\n"
            "\n"
            "options:\n"
            "  --model DIR          Hugging Face model directory\n"
            "  --plan PLAN          plan to evaluate (default: the model as stored)\n"
            "  --text FILE          evaluation text (byte-level models)\n"
            "  --tokens FILE        evaluation token ids (uint32 LE, or JSON array *.json)\n"
            "  --ctx N              window length (default 128)\n"
            "  --windows N          evaluate only the first N windows (default all)\n"
            "  --json               print one JSON object: nll, ppl, tokens, windows,\n"
            "                       nll_fp, and with a plan kl and delta_nll\n"
            "  --calib-text F, --calib-tokens F, --stats F, --calib-ctx N, --calib-seqs N\n"
            "                       calibration input of a plan with GPTQ tensors (as\n"
            "                       given to 'bitplan plan')\n"
            "  --method rtn|gptq|gptq_act\n"
            "                       quantize every planned tensor this way instead of the\n"
            "                       plan's own method (GPTQ needs the calibration input)\n"
            "  --no-kl              with --plan: run only the quantized model (half the\n"
            "                       work); kl, nll_fp and delta_nll are not reported\n"
            "  --quiet              no progress on stderr\n"
            "  -h, --help           show this help\n");
}

int bp_cmd_eval(int argc, char **argv)
{
    enum { O_MODEL = 1, O_PLAN, O_TEXT, O_TOKENS, O_CTX, O_WIN, O_JSON, O_QUIET, O_METHOD, O_NOKL };
    static const struct option opts[] = {
        {"model", required_argument, NULL, O_MODEL},
        {"plan", required_argument, NULL, O_PLAN},
        {"text", required_argument, NULL, O_TEXT},
        {"tokens", required_argument, NULL, O_TOKENS},
        {"ctx", required_argument, NULL, O_CTX},
        {"windows", required_argument, NULL, O_WIN},
        {"json", no_argument, NULL, O_JSON},
        {"quiet", no_argument, NULL, O_QUIET},
        {"method", required_argument, NULL, O_METHOD},
        {"no-kl", no_argument, NULL, O_NOKL},
        BP_CLI_CALIB_LONGOPTS("calib-"),
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model_dir = NULL, *plan_path = NULL, *text = NULL, *tok = NULL;
    long ctx = 128, windows = 0;
    int json = 0, quiet = 0, no_kl = 0, method = -1;
    bp_calib_spec cs;
    bp_calib_spec_default(&cs);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: model_dir = optarg; break;
        case O_PLAN: plan_path = optarg; break;
        case O_TEXT: text = optarg; break;
        case O_TOKENS: tok = optarg; break;
        case O_CTX:
            if (bp_cli_parse_long("eval", "--ctx", optarg, 1, 1L << 24, &ctx))
                return BP_EXIT_USAGE;
            break;
        case O_WIN:
            if (bp_cli_parse_long("eval", "--windows", optarg, 1, 1L << 40, &windows))
                return BP_EXIT_USAGE;
            break;
        case O_JSON: json = 1; break;
        case O_QUIET: quiet = 1; break;
        case O_NOKL: no_kl = 1; break;
        case O_METHOD:
            method = bp_table_method_from_name(optarg);
            if (method < 0)
                return bp_cli_usage_error("eval", "--method: '%s' is not rtn, gptq or gptq_act", optarg);
            break;
        case 'h': eval_usage(stdout); return BP_EXIT_OK;
        default: {
            int h = bp_cli_calib_option("eval", c, optarg, &cs);
            if (h > 0)
                break;
            if (h < 0)
                return BP_EXIT_USAGE;
            return bp_cli_usage_error("eval", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
        }
    }
    if (optind < argc)
        return bp_cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (!model_dir)
        return bp_cli_usage_error("eval", "--model DIR is required");
    if (!!text == !!tok)
        return bp_cli_usage_error("eval", "give one evaluation input: --text FILE or --tokens FILE");
    if (cs.text_path && cs.tokens_path)
        return bp_cli_usage_error("eval", "give --calib-text or --calib-tokens, not both");
    cs.quiet = quiet;

    bp_error err;
    bp_error_clear(&err);
    bp_model *model = NULL;
    bp_llama *llama = NULL;
    bp_plan *plan = NULL;
    bp_tokens *tokens = NULL;
    bp_calib *calib = NULL;
    bp_eval_result r;
    int rc = bp_model_open(model_dir, &model, &err);
    if (rc == BP_OK)
        rc = bp_llama_new(model, &llama, &err);
    if (rc == BP_OK && plan_path)
        rc = bp_plan_read(plan_path, &plan, &err);
    if (rc == BP_OK) {
        rc = bp_calib_load_tokens(text, tok, bp_llama_get_config(llama)->vocab_size, &tokens, &err);
    }
    if (rc == BP_OK && plan && bp_calib_spec_given(&cs))
        rc = bp_calib_open(&cs, llama, NULL, 0, &calib, &err);
    if (rc == BP_OK && plan && method >= 0) {
        bp_plan *p2 = NULL;
        rc = bp_plan_override_method(plan, (bp_quant_method)method, calib, &p2, &err);
        bp_plan_destroy(&plan);
        plan = p2;
    }
    if ((method >= 0 || no_kl) && !plan && rc == BP_OK)
        rc = bp_error_set(&err, BP_EINVAL, "--method and --no-kl need --plan");
    if (rc == BP_OK)
        rc = bp_evaluate_ex(llama, model, plan, calib, bp_tokens_data(tokens), bp_tokens_count(tokens), ctx,
                            windows, quiet, no_kl, &r, &err);
    if (rc == BP_OK) {
        if (json) {
            printf("{\"nll\": %.9g, \"ppl\": %.9g, \"tokens\": %lld, \"windows\": %lld", r.nll, r.ppl,
                   (long long)r.tokens, (long long)r.windows);
            if (!no_kl)
                printf(", \"nll_fp\": %.9g", r.nll_fp);
            if (plan && !no_kl)
                printf(", \"kl\": %.9g, \"delta_nll\": %.9g", r.kl, r.nll - r.nll_fp);
            printf("}\n");
        } else {
            printf("tokens: %lld in %lld windows of %ld\n", (long long)r.tokens, (long long)r.windows, ctx);
            printf("nll: %.6f nats/token  ppl: %.4f\n", r.nll, r.ppl);
            if (plan && !no_kl) {
                printf("full precision nll: %.6f  delta nll: %+.6f\n", r.nll_fp, r.nll - r.nll_fp);
                printf("kl(full || quantized): %.6f nats/token\n", r.kl);
            }
        }
    }
    bp_calib_destroy(&calib);
    bp_tokens_destroy(&tokens);
    bp_plan_destroy(&plan);
    bp_llama_destroy(&llama);
    bp_model_destroy(&model);
    return rc == BP_OK ? BP_EXIT_OK : bp_cli_fail("eval", &err);
}
