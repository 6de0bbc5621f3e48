/* bitplan submit / status / result / cancel / jobs: clients of a running
 * coordinator (docs/daemon.md, docs/protocol.md). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "bitplan/coord.h"
#include "bitplan/proto.h"
#include "cli.h"

typedef struct client {
    const char *cmd;
    const char *endpoint;
    long timeout_ms;
    const char *server_key_arg, *key_arg;
    const char *out_path;
    int wait;
    void *ctx, *sock;
    bp_proto_out out;
    bp_proto_in in;
    bp_msg msg;
    uint64_t next_id;
} client;

static void client_usage(FILE *out, const char *cmd)
{
    static const struct {
        const char *cmd, *args, *what;
    } t[] = {
        {"submit", "JOB.json", "Submit a job spec (JSON file, '-' for stdin); prints its job id."},
        {"status", "ID", "Show a job's state, tasks done/total, progress and ETA.\n"
                         "With --wait, poll until the job ends (exit 1 if it failed)."},
        {"result", "ID", "Print a finished job's result (the plan JSON).\n"
                         "With --wait, wait for the job to end first."},
        {"cancel", "ID", "Cancel a queued or running job."},
        {"jobs", "", "List the coordinator's jobs."},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (strcmp(t[i].cmd, cmd))
            continue;
        fprintf(out, "usage: bitplan %s %s [options]\n\n%s\n\n", cmd, t[i].args, t[i].what);
    }
    fprintf(out,
            "options:\n"
            "  --connect EP        coordinator client endpoint (default tcp://127.0.0.1:5555)\n"
            "  --timeout-ms MS     give up waiting for a reply after MS (default 10000)\n"
            "  --server-key KEY    coordinator public key (file or Z85): enables CURVE\n"
            "  --key FILE          this client's secret key (from bitplan keygen)\n");
    if (!strcmp(cmd, "status") || !strcmp(cmd, "result"))
        fprintf(out, "  --wait              wait until the job is done, failed or canceled\n");
    if (!strcmp(cmd, "result"))
        fprintf(out, "  -o, --out FILE      write the result to FILE instead of stdout\n");
    fprintf(out, "  -h, --help          show this help\n");
}

static int fail_msg(const client *c, const char *msg)
{
    fprintf(stderr, "bitplan %s: error: %s\n", c->cmd, msg);
    return BP_EXIT_FAIL;
}

static int client_open(client *c, bp_error *err)
{
    c->ctx = zmq_ctx_new();
    if (!c->ctx)
        return bp_error_set(err, BP_EIO, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    zmq_ctx_set(c->ctx, ZMQ_BLOCKY, 0);
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock)
        return bp_error_set(err, BP_EIO, "socket: %s", zmq_strerror(zmq_errno()));
    bp_proto_limits lim;
    bp_proto_limits_default(&lim);
    lim.accept = BP_PROTO_FROM_COORDINATOR;
    int rc = bp_proto_socket_limits(c->sock, &lim, err);
    if (rc != BP_OK)
        return rc;
    if (c->server_key_arg || c->key_arg) {
        char server[BP_CURVE_KEY_LEN + 1], secret[BP_CURVE_KEY_LEN + 1], pub[BP_CURVE_KEY_LEN + 1];
        if (!c->server_key_arg || !c->key_arg)
            return bp_error_set(err, BP_EINVAL, "--server-key and --key go together");
        if ((rc = bp_curve_load_key(c->server_key_arg, server, err)) != BP_OK ||
            (rc = bp_curve_load_key(c->key_arg, secret, err)) != BP_OK ||
            (rc = bp_curve_public_key(secret, pub, err)) != BP_OK)
            return rc;
        if (zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, server, 40) ||
            zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, pub, 40) ||
            zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, secret, 40))
            return bp_error_set(err, BP_EIO, "CURVE: %s", zmq_strerror(zmq_errno()));
        memset(secret, 0, sizeof secret);
    }
    if (zmq_connect(c->sock, c->endpoint) != 0)
        return bp_error_set(err, BP_EIO, "cannot connect to %s: %s", c->endpoint,
                            zmq_strerror(zmq_errno()));
    c->next_id = (uint64_t)time(NULL) << 16;
    return BP_OK;
}

static void client_close(client *c)
{
    bp_msg_clear(&c->msg);
    bp_proto_in_clear(&c->in);
    bp_proto_out_clear(&c->out);
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
}

/* Send what c->out holds (request id id) and wait for the matching reply
 * in c->msg. An `error` reply becomes an error return with its message. */
static int roundtrip(client *c, uint64_t id, bp_error *err)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long left = c->timeout_ms;
    int sent = 0;
    while (left > 0) {
        if (!sent) {
            int rc = bp_proto_send(c->sock, NULL, 0, &c->out, err);
            if (rc == BP_OK)
                sent = 1;
            else if (rc != BP_ETIMEOUT)
                return rc;
        }
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, sent ? left : (left < 50 ? left : 50));
        if (n < 0 && zmq_errno() != EINTR)
            return bp_error_set(err, BP_EIO, "poll: %s", zmq_strerror(zmq_errno()));
        if (n > 0) {
            bp_proto_limits lim;
            bp_proto_limits_default(&lim);
            lim.accept = BP_PROTO_FROM_COORDINATOR;
            int rc = bp_proto_recv(c->sock, 0, &lim, ZMQ_DONTWAIT, &c->in, err);
            if (rc == BP_OK)
                rc = bp_proto_decode(c->in.body, c->in.n_body, &lim, &c->msg, err);
            if (rc != BP_OK)
                return bp_error_prefix(err, "bad reply from the coordinator");
            if (c->msg.id == id) {
                if (c->msg.type == BP_MSG_ERROR)
                    return bp_error_set(err, bp_proto_bp_code(c->msg.u.error.code), "%.*s",
                                        (int)c->msg.u.error.message.len,
                                        c->msg.u.error.message.ptr ? c->msg.u.error.message.ptr
                                                                   : "");
                return BP_OK;
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        left = c->timeout_ms - ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
    }
    return bp_error_set(err, BP_ETIMEOUT, "no reply from %s within %ld ms (is bitplan serve "
                        "running there?)", c->endpoint, c->timeout_ms);
}

static char *read_spec(const char *path, size_t *len, bp_error *err)
{
    FILE *fp = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!fp) {
        bp_error_set(err, BP_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = BP_PROTO_DEF_MAX_JOB_SPEC_BYTES + 1;
    char *buf = malloc(cap + 1);
    size_t n = buf ? fread(buf, 1, cap, fp) : 0;
    int bad = !buf || ferror(fp);
    if (fp != stdin)
        fclose(fp);
    if (bad || n == 0 || n > BP_PROTO_DEF_MAX_JOB_SPEC_BYTES) {
        bp_error_set(err, BP_EINVAL, "%s: %s", path,
                     bad ? "read error" : n == 0 ? "empty file" : "job spec larger than 1 MiB");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int terminal(bp_str state)
{
    return (state.len == 4 && !memcmp(state.ptr, "done", 4)) ||
           (state.len == 6 && !memcmp(state.ptr, "failed", 6)) ||
           (state.len == 8 && !memcmp(state.ptr, "canceled", 8));
}

static int do_status(client *c, const char *job, int print, int *ended, int *ok, bp_error *err)
{
    uint64_t id = ++c->next_id;
    int rc = bp_proto_encode_status(&c->out, id, bp_str_c(job), err);
    if (rc == BP_OK)
        rc = roundtrip(c, id, err);
    if (rc == BP_OK && c->msg.type != BP_MSG_STATUS_REPLY)
        rc = bp_error_set(err, BP_EPROTO, "unexpected reply type %s",
                          bp_msg_type_name(c->msg.type));
    if (rc != BP_OK)
        return rc;
    const bp_msg_status_reply *s = &c->msg.u.status_reply;
    *ended = terminal(s->state);
    *ok = s->state.len == 4 && !memcmp(s->state.ptr, "done", 4);
    if (print) {
        printf("job: %.*s\nstate: %.*s\ntasks: %llu/%llu\nprogress: %.1f%%\n", (int)s->job.len,
               s->job.ptr, (int)s->state.len, s->state.ptr, (unsigned long long)s->done,
               (unsigned long long)s->total, 100.0 * s->progress);
        if (s->has_eta)
            printf("eta: %.1f s\n", s->eta_s);
        else
            printf("eta: unknown\n");
        if (s->error.ptr)
            printf("error: %.*s\n", (int)s->error.len, s->error.ptr);
        fflush(stdout);
    }
    return BP_OK;
}

static int wait_for(client *c, const char *job, int print, int *ok, bp_error *err)
{
    for (;;) {
        int ended = 0;
        int rc = do_status(c, job, 0, &ended, ok, err);
        if (rc != BP_OK)
            return rc;
        if (ended)
            return print ? do_status(c, job, 1, &ended, ok, err) : BP_OK;
        struct timespec ts = {0, 200000000L};
        nanosleep(&ts, NULL);
    }
}

static int run_client(const char *cmd, int argc, char **argv)
{
    static const struct option opts[] = {
        {"connect", required_argument, NULL, 'c'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"server-key", required_argument, NULL, 's'},
        {"key", required_argument, NULL, 'k'},
        {"wait", no_argument, NULL, 'w'},
        {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    client c;
    memset(&c, 0, sizeof c);
    c.cmd = cmd;
    c.endpoint = "tcp://127.0.0.1:5555";
    c.timeout_ms = 10000;
    bp_proto_out_init(&c.out, NULL);
    bp_proto_in_init(&c.in);
    bp_msg_init(&c.msg);
    int has_id_arg = strcmp(cmd, "jobs") != 0;
    optind = 1;
    opterr = 0;
    int o;
    while ((o = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (o) {
        case 'c': c.endpoint = optarg; break;
        case 't':
            if (bp_cli_parse_long(cmd, "--timeout-ms", optarg, 1, 86400000L, &c.timeout_ms))
                return BP_EXIT_USAGE;
            break;
        case 's': c.server_key_arg = optarg; break;
        case 'k': c.key_arg = optarg; break;
        case 'w':
            if (strcmp(cmd, "status") && strcmp(cmd, "result"))
                return bp_cli_usage_error(cmd, "--wait applies to status and result");
            c.wait = 1;
            break;
        case 'o':
            if (strcmp(cmd, "result"))
                return bp_cli_usage_error(cmd, "--out applies to result");
            c.out_path = optarg;
            break;
        case 'h': client_usage(stdout, cmd); return BP_EXIT_OK;
        default:
            return bp_cli_usage_error(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    const char *arg = NULL;
    if (has_id_arg) {
        if (optind >= argc)
            return bp_cli_usage_error(cmd, "missing %s", strcmp(cmd, "submit") ? "job id"
                                                                               : "job spec file");
        arg = argv[optind++];
        if (strcmp(cmd, "submit") && (!*arg || strlen(arg) >= BP_COORD_JOB_ID_MAX))
            return bp_cli_usage_error(cmd, "'%s' is not a job id", arg);
    }
    if (optind < argc)
        return bp_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);

    bp_error err;
    bp_error_clear(&err);
    int rc = BP_OK, exit_code = BP_EXIT_OK;
    char *spec = NULL;
    size_t spec_len = 0;
    if (!strcmp(cmd, "submit") && !(spec = read_spec(arg, &spec_len, &err))) {
        client_close(&c);
        return bp_cli_fail(cmd, &err);
    }
    if ((rc = client_open(&c, &err)) != BP_OK)
        goto out;
    uint64_t id = ++c.next_id;
    if (!strcmp(cmd, "submit")) {
        rc = bp_proto_encode_submit(&c.out, id, (bp_str){spec, spec_len}, &err);
        if (rc == BP_OK)
            rc = roundtrip(&c, id, &err);
        if (rc == BP_OK && c.msg.type == BP_MSG_SUBMITTED)
            printf("%.*s\n", (int)c.msg.u.submitted.job.len, c.msg.u.submitted.job.ptr);
        else if (rc == BP_OK)
            rc = bp_error_set(&err, BP_EPROTO, "unexpected reply");
    } else if (!strcmp(cmd, "status")) {
        int ended = 0, ok = 0;
        rc = c.wait ? wait_for(&c, arg, 1, &ok, &err) : do_status(&c, arg, 1, &ended, &ok, &err);
        if (rc == BP_OK && c.wait && !ok)
            exit_code = BP_EXIT_FAIL;
    } else if (!strcmp(cmd, "result")) {
        int ok = 0;
        if (c.wait)
            rc = wait_for(&c, arg, 0, &ok, &err);
        id = ++c.next_id;
        if (rc == BP_OK)
            rc = bp_proto_encode_result(&c.out, id, bp_str_c(arg), &err);
        if (rc == BP_OK)
            rc = roundtrip(&c, id, &err);
        if (rc == BP_OK && c.msg.type != BP_MSG_RESULT_REPLY)
            rc = bp_error_set(&err, BP_EPROTO, "unexpected reply");
        if (rc == BP_OK) {
            bp_str plan = c.msg.u.result_reply.plan;
            FILE *fp = c.out_path ? fopen(c.out_path, "wb") : stdout;
            if (!fp) {
                rc = bp_error_set(&err, BP_EIO, "%s: %s", c.out_path, strerror(errno));
            } else {
                int bad = fwrite(plan.ptr, 1, plan.len, fp) != plan.len;
                bad = (fp != stdout ? fclose(fp) : fflush(fp)) != 0 || bad;
                if (bad)
                    rc = bp_error_set(&err, BP_EIO, "%s: write failed",
                                      c.out_path ? c.out_path : "stdout");
            }
        }
    } else if (!strcmp(cmd, "cancel")) {
        rc = bp_proto_encode_cancel(&c.out, id, bp_str_c(arg), &err);
        if (rc == BP_OK)
            rc = roundtrip(&c, id, &err);
        if (rc == BP_OK)
            printf("canceled %s\n", arg);
    } else {
        rc = bp_proto_encode_jobs(&c.out, id, &err);
        if (rc == BP_OK)
            rc = roundtrip(&c, id, &err);
        if (rc == BP_OK && c.msg.type == BP_MSG_JOBS_REPLY) {
            printf("%-12s %-9s %s\n", "JOB", "STATE", "TASKS");
            for (size_t i = 0; i < c.msg.u.jobs_reply.n_jobs; i++) {
                const bp_proto_job_entry *j = &c.msg.u.jobs_reply.jobs[i];
                printf("%-12.*s %-9.*s %llu/%llu\n", (int)j->job.len, j->job.ptr,
                       (int)j->state.len, j->state.ptr, (unsigned long long)j->done,
                       (unsigned long long)j->total);
            }
        } else if (rc == BP_OK) {
            rc = bp_error_set(&err, BP_EPROTO, "unexpected reply");
        }
    }
out:
    free(spec);
    client_close(&c);
    if (rc != BP_OK)
        return fail_msg(&c, err.msg[0] ? err.msg : bp_strerror(rc));
    return exit_code;
}

int bp_cmd_submit(int argc, char **argv) { return run_client("submit", argc, argv); }
int bp_cmd_status(int argc, char **argv) { return run_client("status", argc, argv); }
int bp_cmd_result(int argc, char **argv) { return run_client("result", argc, argv); }
int bp_cmd_cancel(int argc, char **argv) { return run_client("cancel", argc, argv); }
int bp_cmd_jobs(int argc, char **argv) { return run_client("jobs", argc, argv); }
