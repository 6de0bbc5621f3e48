/* Helpers for the coordinator integration tests: child processes of the
 * bitplan executable (each in its own process group, all killed and reaped
 * in teardown), a small protocol client, and files. */
#ifndef BITPLAN_COORD_TEST_UTIL_H
#define BITPLAN_COORD_TEST_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bitplan/proto.h"

extern char **environ;

#define MAX_KIDS 64

static pid_t kids[MAX_KIDS];
static int n_kids;

static int64_t t_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void t_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Start `bitplan args...` (NULL-terminated) with stdout+stderr to logfile,
 * in its own process group. Returns the pid (or -1). */
static inline pid_t spawn_bp(const char *logfile, ...)
{
    char *argv[40];
    int n = 0;
    argv[n++] = (char *)BP_BINARY;
    va_list ap;
    va_start(ap, logfile);
    char *a;
    while (n < 39 && (a = va_arg(ap, char *)) != NULL)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, BP_BINARY, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0)
        return -1;
    if (n_kids < MAX_KIDS)
        kids[n_kids++] = pid;
    return pid;
}

/* Kill one child (and its group) and reap it. */
static inline void kill_kid(pid_t pid, int sig)
{
    if (pid <= 0)
        return;
    kill(-pid, SIGCONT);
    kill(-pid, sig);
    kill(pid, sig);
    int64_t until = t_now_ms() + 3000;
    for (;;) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD))
            break;
        if (t_now_ms() > until) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            break;
        }
        t_sleep_ms(5);
    }
    for (int i = 0; i < n_kids; i++)
        if (kids[i] == pid)
            kids[i] = -1;
}

/* Teardown: every child still around gets SIGKILL and is reaped. */
static inline void kill_all_kids(void)
{
    for (int i = 0; i < n_kids; i++)
        if (kids[i] > 0)
            kill_kid(kids[i], SIGKILL);
    n_kids = 0;
}

/* 1 if pid has exited (reaped here). */
static inline int kid_exited(pid_t pid)
{
    int st;
    if (pid <= 0)
        return 1;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
        for (int i = 0; i < n_kids; i++)
            if (kids[i] == pid)
                kids[i] = -1;
        return 1;
    }
    return r < 0;
}

/* ---- a protocol client ------------------------------------------------ */

typedef struct tclient {
    void *ctx, *sock;
    bp_proto_out out;
    bp_proto_in in;
    bp_msg msg;
    uint64_t id;
} tclient;

static inline void tc_open(tclient *c, const char *ep)
{
    memset(c, 0, sizeof *c);
    c->ctx = zmq_ctx_new();
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(c->sock, ep);
    bp_proto_out_init(&c->out, NULL);
    bp_proto_in_init(&c->in);
    bp_msg_init(&c->msg);
    c->id = 1000;
}

static inline void tc_close(tclient *c)
{
    bp_msg_clear(&c->msg);
    bp_proto_in_clear(&c->in);
    bp_proto_out_clear(&c->out);
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    memset(c, 0, sizeof *c);
}

/* Wait for a decoded reply with id (any id if id == 0); BP_ETIMEOUT. */
static inline int tc_wait(tclient *c, uint64_t id, long ms)
{
    int64_t until = t_now_ms() + ms;
    for (;;) {
        long left = (long)(until - t_now_ms());
        if (left <= 0)
            return BP_ETIMEOUT;
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, left) <= 0)
            continue;
        bp_proto_limits lim;
        bp_proto_limits_default(&lim);
        if (bp_proto_recv(c->sock, 0, &lim, ZMQ_DONTWAIT, &c->in, NULL) != BP_OK)
            continue;
        if (bp_proto_decode(c->in.body, c->in.n_body, &lim, &c->msg, NULL) != BP_OK)
            return BP_EPROTO;
        if (!id || c->msg.id == id)
            return BP_OK;
    }
}

static inline int tc_send(tclient *c)
{
    return bp_proto_send(c->sock, NULL, 0, &c->out, NULL);
}

/* Submit; returns BP_OK with the id in job, or the error reply's bp code
 * with its message in errmsg. */
static inline int tc_submit(tclient *c, const char *spec, char *job, char *errmsg, size_t errcap)
{
    uint64_t id = ++c->id;
    bp_proto_encode_submit(&c->out, id, bp_str_c(spec), NULL);
    tc_send(c);
    int rc = tc_wait(c, id, 10000);
    if (rc != BP_OK)
        return rc;
    if (c->msg.type == BP_MSG_ERROR) {
        snprintf(errmsg, errcap, "%.*s", (int)c->msg.u.error.message.len,
                 c->msg.u.error.message.ptr);
        return bp_proto_bp_code(c->msg.u.error.code);
    }
    snprintf(job, 32, "%.*s", (int)c->msg.u.submitted.job.len, c->msg.u.submitted.job.ptr);
    return BP_OK;
}

/* Status; state/error copied out. */
static inline int tc_status(tclient *c, const char *job, char *state, uint64_t *done, uint64_t *total,
                     char *error, size_t errcap)
{
    uint64_t id = ++c->id;
    bp_proto_encode_status(&c->out, id, bp_str_c(job), NULL);
    tc_send(c);
    int rc = tc_wait(c, id, 3000);
    if (rc != BP_OK)
        return rc;
    if (c->msg.type != BP_MSG_STATUS_REPLY) {
        if (error && c->msg.type == BP_MSG_ERROR)
            snprintf(error, errcap, "%.*s", (int)c->msg.u.error.message.len,
                     c->msg.u.error.message.ptr);
        return c->msg.type == BP_MSG_ERROR ? bp_proto_bp_code(c->msg.u.error.code) : BP_EPROTO;
    }
    const bp_msg_status_reply *s = &c->msg.u.status_reply;
    snprintf(state, 16, "%.*s", (int)s->state.len, s->state.ptr);
    if (done)
        *done = s->done;
    if (total)
        *total = s->total;
    if (error)
        snprintf(error, errcap, "%.*s", s->error.ptr ? (int)s->error.len : 0,
                 s->error.ptr ? s->error.ptr : "");
    return BP_OK;
}

static inline char *tc_result(tclient *c, const char *job)
{
    uint64_t id = ++c->id;
    bp_proto_encode_result(&c->out, id, bp_str_c(job), NULL);
    tc_send(c);
    if (tc_wait(c, id, 5000) != BP_OK || c->msg.type != BP_MSG_RESULT_REPLY)
        return NULL;
    bp_str p = c->msg.u.result_reply.plan;
    char *s = malloc(p.len + 1);
    memcpy(s, p.ptr, p.len);
    s[p.len] = '\0';
    return s;
}

/* Poll status until the job ends or ms passes; returns the final state in
 * state ("" on timeout). A client request that times out (coordinator
 * down) is retried on a fresh socket. */
static inline void tc_wait_job(tclient *c, const char *ep, const char *job, long ms, char *state,
                        char *error, size_t errcap)
{
    int64_t until = t_now_ms() + ms;
    state[0] = '\0';
    while (t_now_ms() < until) {
        char st[16] = "";
        int rc = tc_status(c, job, st, NULL, NULL, error, errcap);
        if (rc == BP_ETIMEOUT) {
            tc_close(c);
            tc_open(c, ep);
            continue;
        }
        if (rc == BP_OK && (!strcmp(st, "done") || !strcmp(st, "failed") ||
                            !strcmp(st, "canceled"))) {
            strcpy(state, st);
            return;
        }
        t_sleep_ms(50);
    }
}

/* Wait until the job has done >= n tasks (or ms passes). */
static inline int tc_wait_done(tclient *c, const char *job, uint64_t n, long ms)
{
    int64_t until = t_now_ms() + ms;
    while (t_now_ms() < until) {
        char st[16];
        uint64_t d = 0;
        if (tc_status(c, job, st, &d, NULL, NULL, 0) == BP_OK && d >= n)
            return 1;
        t_sleep_ms(20);
    }
    return 0;
}

static inline char *slurp_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (fread(s, 1, (size_t)n, fp) != (size_t)n) {
        free(s);
        s = NULL;
    } else {
        s[n] = '\0';
    }
    fclose(fp);
    return s;
}

/* How many lines of count_file equal i. */
static inline int count_runs(const char *path, unsigned long i)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return 0;
    unsigned long v;
    int n = 0;
    while (fscanf(fp, "%lu", &v) == 1)
        n += v == i;
    fclose(fp);
    return n;
}

static inline int count_lines(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return 0;
    int n = 0, ch;
    while ((ch = fgetc(fp)) != EOF)
        n += ch == '\n';
    fclose(fp);
    return n;
}

/* A fresh scratch directory BP_TEST_TMPDIR/name (emptied). */
static inline void fresh_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", BP_TEST_TMPDIR, name);
    char cmd[2600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", out, out);
    if (system(cmd) != 0) {
    }
}

#endif
