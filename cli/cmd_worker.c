/* bitplan worker: a worker process (docs/daemon.md). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "bitplan/coord.h"
#include "bitplan/worker.h"
#include "cli.h"

static volatile sig_atomic_t worker_stop;

static void on_signal(int sig)
{
    (void)sig;
    worker_stop = 1;
}

static void worker_usage(FILE *out)
{
    fprintf(out,
            "usage: bitplan worker [--connect EP] [--threads N] [options]\n"
            "\n"
            "Run tasks for a coordinator (bitplan serve). Any number of workers may join\n"
            "or leave at any time; a worker re-registers by itself when the coordinator\n"
            "restarts. Start it with OMP_WAIT_POLICY=PASSIVE in the environment.\n"
            "\n"
            "options:\n"
            "  --connect EP        coordinator worker endpoint (default tcp://127.0.0.1:5556)\n"
            "  --threads N         OpenMP threads per task (default: all cores)\n"
            "  --name NAME         name shown in the coordinator's log (default host:pid)\n"
            "  --heartbeat-ms MS   heartbeat interval until the coordinator sets it\n"
            "                      (default 1000)\n"
            "  --server-key KEY    coordinator public key (file or Z85): enables CURVE\n"
            "  --key FILE          this worker's secret key (from bitplan keygen)\n"
            "  -q, --quiet         no log on stderr\n"
            "  -h, --help          show this help\n");
}

enum { O_CONNECT = 1, O_THREADS, O_NAME, O_HB, O_SKEY, O_KEY, O_DWP };

int bp_cmd_worker(int argc, char **argv)
{
    static const struct option opts[] = {
        {"connect", required_argument, NULL, O_CONNECT},
        {"threads", required_argument, NULL, O_THREADS},
        {"name", required_argument, NULL, O_NAME},
        {"heartbeat-ms", required_argument, NULL, O_HB},
        {"server-key", required_argument, NULL, O_SKEY},
        {"key", required_argument, NULL, O_KEY},
        {"die-with-parent", no_argument, NULL, O_DWP}, /* embedded mode, undocumented */
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "worker";
    bp_worker_opts o;
    bp_worker_opts_default(&o);
    o.endpoint = "tcp://127.0.0.1:5556";
    o.log = stderr;
    const char *skey_arg = NULL, *key_arg = NULL;
    int die_with_parent = 0;
    long v;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case O_CONNECT: o.endpoint = optarg; break;
        case O_THREADS:
            if (bp_cli_parse_long(cmd, "--threads", optarg, 1, 4096, &v))
                return BP_EXIT_USAGE;
            o.threads = (int)v;
            break;
        case O_NAME:
            if (!*optarg || strlen(optarg) > 200)
                return bp_cli_usage_error(cmd, "--name must be 1..200 bytes");
            o.name = optarg;
            break;
        case O_HB:
            if (bp_cli_parse_long(cmd, "--heartbeat-ms", optarg, 10, 3600000, &v))
                return BP_EXIT_USAGE;
            o.heartbeat_ms = v;
            break;
        case O_SKEY: skey_arg = optarg; break;
        case O_KEY: key_arg = optarg; break;
        case O_DWP: die_with_parent = 1; break;
        case 'q': o.log = NULL; break;
        case 'h': worker_usage(stdout); return BP_EXIT_OK;
        default:
            return bp_cli_usage_error(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bp_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (die_with_parent) {
        pid_t parent = getppid();
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            return BP_EXIT_FAIL;
    }
    bp_error err;
    bp_error_clear(&err);
    char server[BP_CURVE_KEY_LEN + 1], secret[BP_CURVE_KEY_LEN + 1], pub[BP_CURVE_KEY_LEN + 1];
    if (!!skey_arg != !!key_arg)
        return bp_cli_usage_error(cmd, "--server-key and --key go together");
    if (skey_arg) {
        if (bp_curve_load_key(skey_arg, server, &err) != BP_OK ||
            bp_curve_load_key(key_arg, secret, &err) != BP_OK ||
            bp_curve_public_key(secret, pub, &err) != BP_OK)
            return bp_cli_fail(cmd, &err);
        o.server_key = server;
        o.secret_key = secret;
        o.public_key = pub;
    }
    /* argv to re-execute with when a hung task must be abandoned: the
     * original command line is "bitplan worker ..." (argv[0] is "worker"). */
    char **reexec = calloc((size_t)argc + 2, sizeof *reexec);
    if (reexec) {
        reexec[0] = (char *)"bitplan";
        for (int i = 0; i < argc; i++)
            reexec[i + 1] = argv[i];
        o.reexec_argv = reexec;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    o.stop = &worker_stop;
    (void)bp_runtime_register_kinds();
    int rc = bp_worker_run(&o, &err);
    free(reexec);
    memset(secret, 0, sizeof secret);
    if (rc != BP_OK)
        return bp_cli_fail(cmd, &err);
    return BP_EXIT_OK;
}
