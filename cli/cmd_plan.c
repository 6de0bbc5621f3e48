#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/coord.h"
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
            "usage: bitplan plan --model DIR (--budget-bits B | --budget-bytes S) [options]\n"
            "       bitplan plan --table T (--budget-bits B | --budget-bytes S) [options]\n"
            "\n"
            "Measure what each selected tensor loses in each allowed format (the\n"
            "sensitivity table), then choose one format per tensor that fits the\n"
            "budget with the least total error, solved exactly. Prints a summary\n"
            "and writes the plan (docs/plan-format.md).\n"
            "\n"
            "budget (one is required):\n"
            "  --budget-bits B      average bits per weight over the quantized tensors\n"
            "  --budget-bytes S     total bytes of the quantized tensors: 123456, 3.5GB,\n"
            "                       700MiB (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)\n"
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
            "                         gptq   hfull of GPTQ weights (implies --method gptq)\n"
            "                         dkl    KL increase with only that tensor quantized,\n"
            "                                on held-out calibration windows\n"
            "                       default: hdiag with --imatrix or calibration, else mse\n"
            "  --method rtn|gptq    weights the errors are measured on, and that 'apply'\n"
            "                       will produce (default rtn)\n"
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
            "  --export-lp FILE     write the ILP in CPLEX LP format (for other solvers)\n"
            "  --time-limit S       solver deadline in seconds (default 60)\n"
            "  --out FILE           plan file (default plan.json)\n"
            "  --no-model-hash      skip hashing the model content (faster on huge models)\n"
            "  --workers N          local worker processes of an in-process coordinator\n"
            "                       (default: one per core; docs/daemon.md); 0 runs the\n"
            "                       whole job directly in this process\n"
            "  --quiet              no progress on stderr\n"
            "  -h, --help           show this help\n");
}

int bp_cmd_plan(int argc, char **argv)
{
    enum { O_MODEL = 1, O_BITS, O_BYTES, O_FORMATS, O_RULES, O_IMATRIX, O_METRIC, O_TABLE,
           O_RESWEEP, O_SOLVER, O_EXPORT, O_TLIM, O_OUT, O_NOHASH, O_QUIET, O_METHOD, O_WORKERS };
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
    int have_budget = 0;
    long workers = -1;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: spec.model_dir = optarg; break;
        case O_BITS:
        case O_BYTES:
            if (have_budget)
                return bp_cli_usage_error("plan", "give one budget: --budget-bits or --budget-bytes");
            have_budget = 1;
            if ((c == O_BITS ? bp_budget_parse_bits(optarg, &spec.budget, &err)
                             : bp_budget_parse_bytes(optarg, &spec.budget, &err)) != BP_OK)
                return bp_cli_usage_error("plan", "%s: %s",
                                          c == O_BITS ? "--budget-bits" : "--budget-bytes", err.msg);
            break;
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
                return bp_cli_usage_error("plan", "--method: '%s' is not rtn or gptq", optarg);
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
    if (!have_budget)
        return bp_cli_usage_error("plan", "a budget is required: --budget-bits B or --budget-bytes S");
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
    printf("plan written to %s\n", out_path);
    bp_plan_destroy(&plan);
    return BP_EXIT_OK;
}
