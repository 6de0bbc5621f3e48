/* bitplan serve: the coordinator daemon (docs/daemon.md). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "bitplan/coord.h"
#include "cli.h"

static volatile sig_atomic_t serve_stop;

static void on_signal(int sig)
{
    (void)sig;
    serve_stop = 1;
}

static void serve_usage(FILE *out)
{
    fprintf(out,
            "usage: bitplan serve [--bind EP] [--workers-bind EP] [--state DIR] [options]\n"
            "\n"
            "Run the coordinator: accept jobs from clients (bitplan submit/status/result/\n"
            "cancel/jobs), lease their tasks to workers (bitplan worker), retry the tasks\n"
            "of workers that die or stall, and journal jobs and cache task results under\n"
            "--state so a restart resumes unfinished jobs. See docs/daemon.md.\n"
            "\n"
            "options:\n"
            "  --bind EP             client endpoint (default tcp://127.0.0.1:5555)\n"
            "  --workers-bind EP     worker endpoint (default tcp://127.0.0.1:5556)\n"
            "  --state DIR           journal and result cache (default: none, nothing\n"
            "                        survives a restart)\n"
            "  --heartbeat-ms MS     worker heartbeat interval (default 1000)\n"
            "  --liveness N          missed heartbeats before a worker is dead (default 3)\n"
            "  --stall-ms MS         a task whose progress counter does not move for this\n"
            "                        long is taken back (default 60000)\n"
            "  --task-timeout-ms MS  hard limit per task lease (default 0 = none)\n"
            "  --max-attempts N      worker deaths per task before it is quarantined and\n"
            "                        its job fails (default 3)\n"
            "  --max-workers N       connected workers (default 1024)\n"
            "  --max-jobs N          jobs kept, oldest finished evicted (default 1000)\n"
            "  --max-active-jobs N   queued + running jobs (default 64)\n"
            "  --max-queued N        tasks buffered per job (default 10000)\n"
            "  --curve               require CURVE on both endpoints (needs --key and\n"
            "                        --allow-keys; docs/security.md)\n"
            "  --key FILE            coordinator secret key (from bitplan keygen)\n"
            "  --allow-keys FILE     allowed client and worker public keys, one per line\n"
            "  -q, --quiet           no event log on stderr\n"
            "  -h, --help            show this help\n");
}

enum {
    O_BIND = 1, O_WBIND, O_STATE, O_HB, O_LIVE, O_STALL, O_TTO, O_ATT, O_MW, O_MJ, O_MAJ,
    O_MQ, O_CURVE, O_KEY, O_ALLOW
};

int bp_cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"bind", required_argument, NULL, O_BIND},
        {"workers-bind", required_argument, NULL, O_WBIND},
        {"state", required_argument, NULL, O_STATE},
        {"heartbeat-ms", required_argument, NULL, O_HB},
        {"liveness", required_argument, NULL, O_LIVE},
        {"stall-ms", required_argument, NULL, O_STALL},
        {"task-timeout-ms", required_argument, NULL, O_TTO},
        {"max-attempts", required_argument, NULL, O_ATT},
        {"max-workers", required_argument, NULL, O_MW},
        {"max-jobs", required_argument, NULL, O_MJ},
        {"max-active-jobs", required_argument, NULL, O_MAJ},
        {"max-queued", required_argument, NULL, O_MQ},
        {"curve", no_argument, NULL, O_CURVE},
        {"key", required_argument, NULL, O_KEY},
        {"allow-keys", required_argument, NULL, O_ALLOW},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "serve";
    bp_coord_opts o;
    bp_coord_opts_default(&o);
    o.client_bind = "tcp://127.0.0.1:5555";
    o.worker_bind = "tcp://127.0.0.1:5556";
    o.log = stderr;
    int curve = 0;
    const char *key_file = NULL;
    long v;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case O_BIND: o.client_bind = optarg; break;
        case O_WBIND: o.worker_bind = optarg; break;
        case O_STATE: o.state_dir = optarg; break;
#define NUM(opt, name, lo, hi, field)                                                   \
    case opt:                                                                           \
        if (bp_cli_parse_long(cmd, name, optarg, lo, hi, &v))                           \
            return BP_EXIT_USAGE;                                                       \
        o.field = v;                                                                    \
        break;
        NUM(O_HB, "--heartbeat-ms", 10, 3600000, heartbeat_ms)
        NUM(O_LIVE, "--liveness", 1, 1000, liveness)
        NUM(O_STALL, "--stall-ms", 100, 86400000L, stall_ms)
        NUM(O_TTO, "--task-timeout-ms", 0, 2592000000L, task_timeout_ms)
        NUM(O_ATT, "--max-attempts", 1, 1000, max_attempts)
        NUM(O_MW, "--max-workers", 1, 65536, max_workers)
        NUM(O_MJ, "--max-jobs", 1, 10000, max_jobs)
        NUM(O_MAJ, "--max-active-jobs", 1, 10000, max_active_jobs)
        NUM(O_MQ, "--max-queued", 1, 10000000, max_queued_tasks)
#undef NUM
        case O_CURVE: curve = 1; break;
        case O_KEY: key_file = optarg; break;
        case O_ALLOW: o.allow_keys_file = optarg; break;
        case 'q': o.log = NULL; break;
        case 'h': serve_usage(stdout); return BP_EXIT_OK;
        default:
            return bp_cli_usage_error(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bp_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (o.max_active_jobs > o.max_jobs)
        o.max_active_jobs = o.max_jobs;
    char secret[BP_CURVE_KEY_LEN + 1];
    bp_error err;
    bp_error_clear(&err);
    if (curve) {
        if (!key_file || !o.allow_keys_file)
            return bp_cli_usage_error(cmd, "--curve needs --key and --allow-keys");
        if (bp_curve_load_key(key_file, secret, &err) != BP_OK)
            return bp_cli_fail(cmd, &err);
        o.curve_secret_key = secret;
    } else if (key_file || o.allow_keys_file) {
        return bp_cli_usage_error(cmd, "--key and --allow-keys need --curve");
    }
    if (!curve && o.log &&
        (!strncmp(o.client_bind, "tcp://*", 7) || !strncmp(o.worker_bind, "tcp://*", 7) ||
         !strncmp(o.client_bind, "tcp://0.0.0.0", 13) ||
         !strncmp(o.worker_bind, "tcp://0.0.0.0", 13)))
        fprintf(stderr, "bitplan serve: warning: listening on all interfaces without --curve: "
                        "anyone who can reach this host can submit jobs and act as a worker\n");
    if (!o.state_dir && o.log)
        fprintf(stderr, "bitplan serve: note: no --state: jobs and results are not persisted\n");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    bp_coord *co = NULL;
    int rc = bp_coord_new(&o, &co, &err);
    memset(secret, 0, sizeof secret);
    if (rc != BP_OK)
        return bp_cli_fail(cmd, &err);
    rc = bp_coord_run(co, &serve_stop, &err);
    bp_coord_destroy(&co);
    if (rc != BP_OK)
        return bp_cli_fail(cmd, &err);
    if (o.log)
        fprintf(stderr, "bitplan serve: stopped\n");
    return BP_EXIT_OK;
}
