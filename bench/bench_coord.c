/* Coordinator benchmarks.
 *  1. Per-task overhead: round trip of empty `noop` tasks through the
 *     coordinator with one worker process on tcp loopback, against a bare
 *     ZeroMQ DEALER<->ROUTER ping-pong between two processes (baseline).
 *  2. Coordinator memory: RSS with 100 connected idle workers (DEALER
 *     sockets in a helper process that send ready + heartbeats) and a job
 *     of 1,000 tasks (100 leased, 900 queued).
 * Every child is forked before this process creates a ZeroMQ context.
 * Usage: bench_coord [n_tasks]   (default 20000) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bitplan/coord.h"
#include "bitplan/proto.h"
#include "bitplan/worker.h"

#define EP_COORD "tcp://127.0.0.1:27300"
#define EP_PING "tcp://127.0.0.1:27302"
#define EP_MEM "tcp://127.0.0.1:27304"
#define FAKE_WORKERS 100

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long rss_kib(void)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (fp && fgets(line, sizeof line, fp))
        if (!strncmp(line, "VmRSS:", 6))
            v = strtol(line + 6, NULL, 10);
    if (fp)
        fclose(fp);
    return v;
}

static void child_worker(void)
{
    bp_runtime_register_test_kinds();
    bp_worker_opts o;
    bp_worker_opts_default(&o);
    o.endpoint = EP_COORD;
    o.threads = 1;
    bp_worker_run(&o, NULL);
    _exit(0);
}

static void child_echo(void)
{
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(s, EP_PING);
    zmq_send(s, "hi", 2, 0);
    char buf[256];
    for (;;) {
        int n = zmq_recv(s, buf, sizeof buf, 0);
        if (n < 0)
            break;
        zmq_send(s, buf, (size_t)(n > (int)sizeof buf ? (int)sizeof buf : n), 0);
    }
    _exit(0);
}

static void child_fake_workers(void)
{
    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_BLOCKY, 0);
    void *s[FAKE_WORKERS];
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    for (int i = 0; i < FAKE_WORKERS; i++) {
        s[i] = zmq_socket(ctx, ZMQ_DEALER);
        zmq_connect(s[i], EP_MEM);
        char name[32];
        snprintf(name, sizeof name, "fake%d", i);
        bp_proto_encode_ready(&out, 1, bp_str_c(name), 1, (uint64_t)getpid(), NULL);
        bp_proto_send(s[i], NULL, 0, &out, NULL);
    }
    /* heartbeat with a moving counter; never answer tasks (they stay leased) */
    for (uint64_t beat = 1;; beat++) {
        for (int i = 0; i < FAKE_WORKERS; i++) {
            char buf[4096];
            while (zmq_recv(s[i], buf, sizeof buf, ZMQ_DONTWAIT) >= 0) {
            }
            bp_proto_encode_heartbeat(&out, beat, beat, NULL, NULL);
            bp_proto_send(s[i], NULL, 0, &out, NULL);
        }
        usleep(200000);
    }
}

static pid_t fork_child(void (*fn)(void))
{
    pid_t p = fork();
    if (p == 0)
        fn();
    return p;
}

static double baseline_rtt_us(int n)
{
    void *ctx = zmq_ctx_new();
    void *r = zmq_socket(ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(r, ZMQ_LINGER, &zero, sizeof zero);
    zmq_bind(r, EP_PING);
    char id[256], buf[256];
    int idl = zmq_recv(r, id, sizeof id, 0);
    zmq_recv(r, buf, sizeof buf, 0); /* "hi" */
    /* a message the size of a noop task header (~60 bytes) */
    memset(buf, 'x', 64);
    for (int k = 0; k < 1000; k++) { /* warm-up */
        zmq_send(r, id, (size_t)idl, ZMQ_SNDMORE);
        zmq_send(r, buf, 64, 0);
        zmq_recv(r, id, sizeof id, 0);
        zmq_recv(r, buf, sizeof buf, 0);
    }
    double t0 = now_s();
    for (int k = 0; k < n; k++) {
        zmq_send(r, id, (size_t)idl, ZMQ_SNDMORE);
        zmq_send(r, buf, 64, 0);
        zmq_recv(r, id, sizeof id, 0);
        zmq_recv(r, buf, sizeof buf, 0);
    }
    double dt = now_s() - t0;
    zmq_close(r);
    zmq_ctx_term(ctx);
    return dt / n * 1e6;
}

static int wait_job(bp_coord *c, const char *job, double timeout_s)
{
    double t0 = now_s();
    bp_coord_job_info info;
    while (now_s() - t0 < timeout_s) {
        bp_coord_poll(c, 10, NULL);
        bp_coord_status(c, job, &info, NULL);
        if (!strcmp(info.state, "done"))
            return 0;
        if (!strcmp(info.state, "failed"))
            return -1;
    }
    return -1;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    if (n < 100)
        n = 100;
    setenv("BITPLAN_TEST_KINDS", "1", 1);
    long rss0 = rss_kib();
    pid_t pw = fork_child(child_worker);
    pid_t pe = fork_child(child_echo);
    pid_t pf = fork_child(child_fake_workers);

    double base = baseline_rtt_us(n);

    bp_coord_opts o;
    bp_coord_opts_default(&o);
    o.worker_bind = EP_COORD;
    o.max_queued_tasks = 100000;
    bp_coord *c = NULL;
    bp_error e;
    if (bp_coord_new(&o, &c, &e) != BP_OK) {
        fprintf(stderr, "bench_coord: %s\n", e.msg);
        return 1;
    }
    bp_coord_stats st;
    do {
        bp_coord_poll(c, 10, NULL);
        bp_coord_get_stats(c, &st);
    } while (st.workers < 1);
    char spec[256], job[BP_COORD_JOB_ID_MAX];
    snprintf(spec, sizeof spec, "{\"kind\":\"test\",\"tasks\":1000,\"task_kind\":\"noop\"}");
    bp_coord_submit(c, spec, strlen(spec), job, &e); /* warm-up */
    wait_job(c, job, 60);
    snprintf(spec, sizeof spec, "{\"kind\":\"test\",\"tasks\":%d,\"task_kind\":\"noop\",\"seed\":1}",
             n);
    double t0 = now_s();
    bp_coord_submit(c, spec, strlen(spec), job, &e);
    int bad = wait_job(c, job, 300);
    double per_task = (now_s() - t0) / n * 1e6;
    bp_coord_destroy(&c);
    kill(pw, SIGTERM);
    kill(pe, SIGKILL);
    waitpid(pw, NULL, 0);
    waitpid(pe, NULL, 0);

    /* memory */
    long rss_before = rss_kib();
    o.worker_bind = EP_MEM;
    o.max_queued_tasks = 10000;
    if (bp_coord_new(&o, &c, &e) != BP_OK) {
        fprintf(stderr, "bench_coord: %s\n", e.msg);
        return 1;
    }
    long rss_coord = rss_kib();
    double tw = now_s();
    do {
        bp_coord_poll(c, 10, NULL);
        bp_coord_get_stats(c, &st);
    } while (st.workers < FAKE_WORKERS && now_s() - tw < 20);
    for (int k = 0; k < 20; k++)
        bp_coord_poll(c, 10, NULL);
    long rss_workers = rss_kib();
    uint64_t joined = st.workers;
    snprintf(spec, sizeof spec, "{\"kind\":\"test\",\"tasks\":1000,\"sleep_ms\":1000,\"seed\":2}");
    bp_coord_submit(c, spec, strlen(spec), job, &e);
    for (int k = 0; k < 50; k++)
        bp_coord_poll(c, 10, NULL);
    bp_coord_get_stats(c, &st);
    long rss_tasks = rss_kib();
    bp_coord_destroy(&c);
    kill(pf, SIGKILL);
    waitpid(pf, NULL, 0);

    printf("bench_coord: %d noop tasks, 1 worker process, tcp loopback\n", n);
    printf("  bare DEALER<->ROUTER ping-pong (baseline): %8.1f us per round trip\n", base);
    printf("  coordinator noop task round trip:          %8.1f us per task%s\n", per_task,
           bad ? " (JOB FAILED)" : "");
    printf("  overhead over baseline:                    %8.1f us per task\n", per_task - base);
    printf("memory (VmRSS): process start %ld KiB, before coordinator %ld KiB\n", rss0,
           rss_before);
    printf("  coordinator created, idle:                 %8ld KiB\n", rss_coord);
    printf("  + %3llu connected idle workers:             %8ld KiB (+%ld)\n",
           (unsigned long long)joined, rss_workers, rss_workers - rss_coord);
    printf("  + job of 1000 tasks (%llu leased, rest queued): %5ld KiB (+%ld)\n",
           (unsigned long long)st.tasks_leased, rss_tasks, rss_tasks - rss_workers);
    return bad ? 1 : 0;
}
