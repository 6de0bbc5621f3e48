#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/coord.h"
#include "bitplan/cost.h"
#include "bitplan/job.h"
#include "bitplan/worker.h"
#include "bitplan/job_spec.h"
#include "bitplan/task.h"
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"

static void plan_usage(FILE *out)
{
    fprintf(out,
            "usage: bitplan plan --model DIR (--budget-bits B | --budget-bytes S) [constraints] [options]\n"
            "       bitplan plan --table T (--budget-bits B | --budget-bytes S) [constraints] [options]\n"
            "\n"
            "Measure what each selected tensor loses in each allowed format (the\n"
            "sensitivity table), then choose one format per tensor that fits the\n"
            "budget with the least total error, solved exactly. Prints a summary\n"
            "and writes the plan (docs/plan-format.md).\n"
            "\n"
            "budget (one or both is required):\n"
            "  --budget-bits B      average bits per weight over the quantized tensors\n"
            "  --budget-bytes S     total bytes of the quantized tensors: 123456, 3.5GB,\n"
            "                       700MiB (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024);\n"
            "                       with --kv-context also the KV cache\n"
            "more constraints, all held together (docs/cost-models.md):\n"
            "  --latency-us T       sum of per-tensor latency <= T microseconds; needs\n"
            "  --profile P          h100, a100, rtx4090, cpu, a profile .json (roofline),\n"
            "                       or a measured latency table .csv\n"
            "  --profile-fallback P roofline profile for shapes a .csv table lacks\n"
            "  --phase decode|prefill  (default decode)\n"
            "  --batch B            decode batch or prefill length (default 1)\n"
            "  --bops X             bit operations per token <= X (SI suffixes K M G T P)\n"
            "  --kv-context N       --budget-bytes also holds the KV cache of N tokens\n"
            "  --kv-batch B         ... for B sequences (default 1)\n"
            "  --kv-format F        f16 (default), fp8_e4m3, int8, int4: the KV precision\n"
            "                       unless the table has KV rows (then it is chosen)\n"
            "search:\n"
            "  --search NAME        ilp (exact on the additive proxy), lagrange (reports its\n"
            "                       gap bound), nsga2 (least-error feasible front member),\n"
            "                       evo (real-loss search: the model's KL on held-out\n"
            "                       calibration windows, seeded with the ILP plan).\n"
            "                       Default: evo with a model and --text/--tokens, else ilp.\n"
            "                       evo and the default return the best measured of the\n"
            "                       search, the ILP plan and every uniform plan that fits\n"
            "  --evo-generations N  generations of the search (default 10; 0: measure the\n"
            "                       ILP and uniform plans only)\n"
            "  --evo-lambda N       offspring per generation (default 6)\n"
            "  --evo-promote N      offspring re-measured at high fidelity (default 2)\n"
            "  --evo-windows N      held-out windows of the high fidelity (default 32; the\n"
            "                       low fidelity uses the first quarter)\n"
            "  --evo-seed N         random seed (default 1)\n"
            "  --granularity tensor|block  block: a format per block of --block-size rows or\n"
            "                       columns of each tensor (docs/blocks.md)\n"
            "  --block-size N       rows or columns per block\n"
            "  --block-axis rows|cols  (default cols)\n"
            "options:\n"
            "  --model DIR          Hugging Face model directory\n"
            "  --formats LIST       comma-separated formats, or 'all' (default: all;\n"
            "                       see 'bitplan formats')\n"
            "  --rules FILE         tensor selection and per-pattern formats (docs/rules.md)\n"
            "  --imatrix FILE       llama.cpp imatrix.dat importance weights; enables the\n"
            "                       'hdiag' metric (and makes it the default)\n"
            "  --metric NAME        error to minimize (docs/table-format.md):\n"
            "                         mse    squared weight error (no data needed)\n"
            "                         hdiag  sum_j H_jj |dW[:,j]|^2 (imatrix or calibration)\n"
            "                         hfull  tr(dW H dW^T), the layer output error\n"
            "                         gptq   hfull of GPTQ weights (implies --method gptq\n"
            "                                unless --method gptq_act)\n"
            "                         dkl    KL increase with only that tensor quantized,\n"
            "                                on held-out calibration windows\n"
            "                       default: hdiag with --imatrix or calibration, else mse\n"
            "  --method rtn|gptq|gptq_act\n"
            "                       weights the errors are measured on, and that 'apply'\n"
            "                       will produce (default rtn); gptq_act is GPTQ with\n"
            "                       act-order and static groups (docs/gptq.md)\n"
            "calibration (for hdiag, hfull, gptq, dkl; docs/calibration.md):\n"
            "  --text FILE          byte-level text (token id = byte value)\n"
            "  --tokens FILE        token ids: little-endian uint32, or a JSON array (*.json)\n"
            "  --stats FILE         Hessian statistics: read if FILE exists, else computed\n"
            "                       from --text/--tokens and saved there\n"
            "  --ctx N              tokens per calibration sequence and KL window (default 128)\n"
            "  --calib-seqs N       sequences for the Hessians (default 64, at most 3/4 of the\n"
            "                       stream when KL windows are needed)\n"
            "  --kl-windows N       held-out windows for dkl (default 16)\n"
            "  --diag-only          collect only Hessian diagonals (for huge models)\n"
            "  --table T            sensitivity table (docs/table-format.md): re-solved\n"
            "                       without measuring if T exists, else written after the sweep\n"
            "  --resweep            measure even if --table exists, and overwrite it\n"
            "  --solver ilp|dp      exact ILP with GLPK (default) or exact dynamic programming\n"
            "                       (dp: one constraint only)\n"
            "  --export-lp FILE     write the ILP in CPLEX LP format (for other solvers)\n"
            "  --time-limit S       solver deadline in seconds (default 60)\n"
            "  --out FILE           plan file (default plan.json)\n"
            "  --no-model-hash      skip hashing the model content (faster on huge models)\n"
            "  --split-rows N       rows per measure task of large tensors, so one tensor's\n"
            "                       measurement spreads over workers (default 4096; 0 = never)\n"
            "  --split-min-weights M  split only tensors with more weights (default 16777216;\n"
            "                       0 = any size)\n"
            "  --workers N          local worker processes of an in-process coordinator\n"
            "                       (default: one per core; docs/daemon.md); 0 runs the\n"
            "                       whole job directly in this process\n"
            "  --quiet              no progress on stderr\n"
            "  -h, --help           show this help\n");
}

int bp_cmd_plan(int argc, char **argv)
{
    enum { O_MODEL = 1, O_BITS, O_BYTES, O_FORMATS, O_RULES, O_IMATRIX, O_METRIC, O_TABLE,
           O_RESWEEP, O_SOLVER, O_EXPORT, O_TLIM, O_OUT, O_NOHASH, O_QUIET, O_METHOD, O_WORKERS,
           O_SEARCH, O_GRAN, O_BSIZE, O_BAXIS, O_LAT, O_PROFILE, O_FALLBACK, O_PHASE, O_BATCH, O_BOPS,
           O_KVCTX, O_KVBATCH, O_KVFMT, O_EVOGEN, O_EVOLAM, O_EVOPROM, O_EVOWIN, O_EVOSEED, O_SPLITR,
           O_SPLITW };
    static const struct option opts[] = {
        {"model", required_argument, NULL, O_MODEL},
        {"budget-bits", required_argument, NULL, O_BITS},
        {"budget-bytes", required_argument, NULL, O_BYTES},
        {"formats", required_argument, NULL, O_FORMATS},
        {"rules", required_argument, NULL, O_RULES},
        {"imatrix", required_argument, NULL, O_IMATRIX},
        {"metric", required_argument, NULL, O_METRIC},
        {"table", required_argument, NULL, O_TABLE},
        {"resweep", no_argument, NULL, O_RESWEEP},
        {"solver", required_argument, NULL, O_SOLVER},
        {"export-lp", required_argument, NULL, O_EXPORT},
        {"time-limit", required_argument, NULL, O_TLIM},
        {"out", required_argument, NULL, O_OUT},
        {"no-model-hash", no_argument, NULL, O_NOHASH},
        {"quiet", no_argument, NULL, O_QUIET},
        {"method", required_argument, NULL, O_METHOD},
        {"workers", required_argument, NULL, O_WORKERS},
        {"search", required_argument, NULL, O_SEARCH},
        {"granularity", required_argument, NULL, O_GRAN},
        {"block-size", required_argument, NULL, O_BSIZE},
        {"block-axis", required_argument, NULL, O_BAXIS},
        {"latency-us", required_argument, NULL, O_LAT},
        {"profile", required_argument, NULL, O_PROFILE},
        {"profile-fallback", required_argument, NULL, O_FALLBACK},
        {"phase", required_argument, NULL, O_PHASE},
        {"batch", required_argument, NULL, O_BATCH},
        {"bops", required_argument, NULL, O_BOPS},
        {"kv-context", required_argument, NULL, O_KVCTX},
        {"kv-batch", required_argument, NULL, O_KVBATCH},
        {"kv-format", required_argument, NULL, O_KVFMT},
        {"evo-generations", required_argument, NULL, O_EVOGEN},
        {"evo-lambda", required_argument, NULL, O_EVOLAM},
        {"evo-promote", required_argument, NULL, O_EVOPROM},
        {"evo-windows", required_argument, NULL, O_EVOWIN},
        {"evo-seed", required_argument, NULL, O_EVOSEED},
        {"split-rows", required_argument, NULL, O_SPLITR},
        {"split-min-weights", required_argument, NULL, O_SPLITW},
        BP_CLI_CALIB_LONGOPTS(""),
        {"kl-windows", required_argument, NULL, BP_CLI_O_KLW},
        {"diag-only", no_argument, NULL, BP_CLI_O_DIAG},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bp_job_spec spec;
    bp_job_spec_default(&spec);
    const char *out_path = "plan.json";
    bp_error err;
    bp_error_clear(&err);
    int have_bits = 0, have_bytes = 0;
    bp_budget bytes_budget;
    memset(&bytes_budget, 0, sizeof bytes_budget);
    long lv = 0;
    long workers = -1;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: spec.model_dir = optarg; break;
        case O_BITS:
            if (have_bits++)
                return bp_cli_usage_error("plan", "--budget-bits is given twice");
            if (bp_budget_parse_bits(optarg, &spec.budget, &err) != BP_OK)
                return bp_cli_usage_error("plan", "--budget-bits: %s", err.msg);
            break;
        case O_BYTES:
            if (have_bytes++)
                return bp_cli_usage_error("plan", "--budget-bytes is given twice");
            if (bp_budget_parse_bytes(optarg, &bytes_budget, &err) != BP_OK)
                return bp_cli_usage_error("plan", "--budget-bytes: %s", err.msg);
            break;
        case O_SEARCH: {
            int k = bp_job_search_from_name(optarg);
            if (k < 0)
                return bp_cli_usage_error("plan", "--search: '%s' is not ilp, lagrange, nsga2 or evo", optarg);
            spec.search = (bp_job_search)k;
            break;
        }
        case O_GRAN:
            if (!strcmp(optarg, "tensor") || !strcmp(optarg, "block"))
                spec.granularity = optarg[0] == 'b' ? BP_JOB_GRANULARITY_BLOCK : BP_JOB_GRANULARITY_TENSOR;
            else
                return bp_cli_usage_error("plan", "--granularity: '%s' is not tensor or block", optarg);
            break;
        case O_BSIZE:
            if (bp_cli_parse_long("plan", "--block-size", optarg, 1, 1L << 30, &lv))
                return BP_EXIT_USAGE;
            spec.block_size = lv;
            break;
        case O_EVOGEN:
            if (bp_cli_parse_long("plan", "--evo-generations", optarg, 0, 100000, &lv))
                return BP_EXIT_USAGE;
            spec.evo_generations = lv ? lv : -1;
            break;
        case O_EVOLAM:
            if (bp_cli_parse_long("plan", "--evo-lambda", optarg, 1, 4096, &lv))
                return BP_EXIT_USAGE;
            spec.evo_lambda = lv;
            break;
        case O_EVOPROM:
            if (bp_cli_parse_long("plan", "--evo-promote", optarg, 1, 4096, &lv))
                return BP_EXIT_USAGE;
            spec.evo_promote = lv;
            break;
        case O_EVOWIN:
            if (bp_cli_parse_long("plan", "--evo-windows", optarg, 1, 1L << 30, &lv))
                return BP_EXIT_USAGE;
            spec.evo_windows = lv;
            break;
        case O_SPLITR:
            if (bp_cli_parse_long("plan", "--split-rows", optarg, 0, 1L << 40, &lv))
                return BP_EXIT_USAGE;
            if (lv % 64)
                return bp_cli_usage_error("plan", "--split-rows: %ld is not a multiple of 64 rows", lv);
            spec.split_rows = lv ? lv : -1;
            break;
        case O_SPLITW:
            if (bp_cli_parse_long("plan", "--split-min-weights", optarg, 0, LONG_MAX, &lv))
                return BP_EXIT_USAGE;
            spec.split_min_weights = lv ? lv : -1;
            break;
        case O_EVOSEED:
            if (bp_cli_parse_long("plan", "--evo-seed", optarg, 1, LONG_MAX, &lv))
                return BP_EXIT_USAGE;
            spec.evo_seed = lv;
            break;
        case O_BAXIS:
            if (strcmp(optarg, "rows") && strcmp(optarg, "cols"))
                return bp_cli_usage_error("plan", "--block-axis: '%s' is not rows or cols", optarg);
            spec.block_axis = optarg[0] == 'r' ? BP_BLOCK_AXIS_ROWS : BP_BLOCK_AXIS_COLS;
            break;
        case O_LAT:
            if (bp_cli_parse_double("plan", "--latency-us", optarg, 1e-9, 1e15, &spec.latency_us))
                return BP_EXIT_USAGE;
            break;
        case O_PROFILE: spec.profile = optarg; break;
        case O_FALLBACK: spec.profile_fallback = optarg; break;
        case O_PHASE: {
            bp_cost_phase ph;
            if (bp_cost_phase_parse(optarg, &ph, &err) != BP_OK)
                return bp_cli_usage_error("plan", "--phase: %s", err.msg);
            spec.phase = ph;
            break;
        }
        case O_BATCH:
            if (bp_cli_parse_long("plan", "--batch", optarg, 1, 1L << 30, &lv))
                return BP_EXIT_USAGE;
            spec.batch = lv;
            break;
        case O_BOPS:
            if (bp_job_parse_si(optarg, "--bops", &spec.bops, &err) != BP_OK)
                return bp_cli_usage_error("plan", "%s", err.msg);
            break;
        case O_KVCTX:
        case O_KVBATCH:
            if (bp_cli_parse_long("plan", c == O_KVCTX ? "--kv-context" : "--kv-batch", optarg, 1, 1L << 30, &lv))
                return BP_EXIT_USAGE;
            *(c == O_KVCTX ? &spec.kv_context : &spec.kv_batch) = lv;
            break;
        case O_KVFMT: {
            bp_kv_format kf;
            if (bp_kv_format_parse(optarg, &kf, &err) != BP_OK)
                return bp_cli_usage_error("plan", "--kv-format: %s", err.msg);
            spec.kv_format = kf;
            break;
        }
        case O_FORMATS: spec.formats = optarg; break;
        case O_RULES: spec.rules_path = optarg; break;
        case O_IMATRIX: spec.imatrix_path = optarg; break;
        case O_METRIC:
            spec.metric = bp_table_metric_from_name(optarg);
            if (spec.metric < 0 || spec.metric >= BP_METRIC_N_ERROR)
                return bp_cli_usage_error("plan", "--metric: unknown metric '%s' (mse, hdiag, hfull, gptq, dkl)",
                                          optarg);
            break;
        case O_TABLE: spec.table_path = optarg; break;
        case O_RESWEEP: spec.resweep = 1; break;
        case O_SOLVER:
            if (!strcmp(optarg, "ilp"))
                spec.solver = BP_JOB_SOLVER_ILP;
            else if (!strcmp(optarg, "dp"))
                spec.solver = BP_JOB_SOLVER_DP;
            else
                return bp_cli_usage_error("plan", "--solver: '%s' is not ilp or dp", optarg);
            break;
        case O_EXPORT: spec.export_lp = optarg; break;
        case O_TLIM:
            if (bp_cli_parse_double("plan", "--time-limit", optarg, 0.001, 1e6, &spec.time_limit_s))
                return BP_EXIT_USAGE;
            break;
        case O_OUT: out_path = optarg; break;
        case O_NOHASH: spec.skip_model_hash = 1; break;
        case O_QUIET: spec.quiet = 1; break;
        case O_WORKERS:
            if (bp_cli_parse_long("plan", "--workers", optarg, 0, 1024, &workers))
                return BP_EXIT_USAGE;
            break;
        case O_METHOD: {
            int m = bp_table_method_from_name(optarg);
            if (m < 0)
                return bp_cli_usage_error("plan", "--method: '%s' is not rtn, gptq or gptq_act", optarg);
            spec.method = (bp_quant_method)m;
            break;
        }
        case 'h': plan_usage(stdout); return BP_EXIT_OK;
        default: {
            int h = bp_cli_calib_option("plan", c, optarg, &spec.calib);
            if (h > 0)
                break;
            if (h < 0)
                return BP_EXIT_USAGE;
            return bp_cli_usage_error("plan", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
        }
    }
    if (optind < argc)
        return bp_cli_usage_error("plan", "unexpected argument '%s'", argv[optind]);
    if (!have_bits && !have_bytes)
        return bp_cli_usage_error("plan", "a budget is required: --budget-bits B or --budget-bytes S");
    if (have_bits && have_bytes)
        spec.budget_bytes = bytes_budget.bytes;
    else if (have_bytes)
        spec.budget = bytes_budget;
    if (bp_job_spec_check(&spec, &err) != BP_OK)
        return bp_cli_usage_error("plan", "%s", err.msg);
    if (spec.calib.text_path && spec.calib.tokens_path)
        return bp_cli_usage_error("plan", "give --text or --tokens, not both");
    if (!spec.model_dir && !spec.table_path)
        return bp_cli_usage_error("plan", "--model DIR or --table T is required");

    bp_plan *plan = NULL;
    if (workers < 0)
        workers = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    struct stat stt;
    if (spec.table_path && !spec.resweep && stat(spec.table_path, &stt) == 0 && !spec.quiet)
        fprintf(stderr, "bitplan: re-solving the existing table %s (no sweep)\n", spec.table_path);
    /* --workers 0, a table alone, or an LP export: the direct pipeline in
     * this process. Otherwise the job's tasks (the same ones a daemon
     * would distribute). */
    if (workers == 0 || !spec.model_dir || spec.export_lp) {
        if (bp_job_run(&spec, &plan, &err) != BP_OK)
            return bp_cli_fail("plan", &err);
    } else {
        char *json = bp_job_spec_to_json(&spec, &err);
        char *result = NULL;
        if (!json)
            return bp_cli_fail("plan", &err);
        /* An in-process coordinator with local worker processes: the same
         * code path as the daemon. Workers are spawned before this process
         * creates any ZeroMQ context or OpenMP team. */
        bp_runtime_register_kinds();
        bp_coord_embedded_opts eo;
        bp_coord_embedded_opts_default(&eo);
        eo.n_workers = (int)workers;
        eo.quiet = spec.quiet;
        int rc = bp_coord_run_embedded_ex(json, &eo, &result, &err);
        free(json);
        if (rc == BP_OK)
            rc = bp_plan_from_string(result, "job result", &plan, &err);
        free(result);
        if (rc != BP_OK)
            return bp_cli_fail("plan", &err);
    }
    if (bp_plan_write(plan, out_path, &err) != BP_OK) {
        bp_plan_destroy(&plan);
        return bp_cli_fail("plan", &err);
    }
    bp_plan_print_summary(plan, stdout);
    char *search = bp_plan_search_json(plan);
    if (search && strstr(search, "\"time_limited\":true"))
        fprintf(stderr, "bitplan plan: warning: the solver stopped at its time limit, so this plan may differ "
                        "between runs; raise --time-limit\n");
    free(search);
    printf("plan written to %s\n", out_path);
    bp_plan_destroy(&plan);
    return BP_EXIT_OK;
}
