/* Integration: a coordinator and workers as real processes of the bitplan
 * executable on 127.0.0.1 (ports 27100-27199), running the "test" job kind.
 * Results must be byte-identical whatever happens to the workers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bitplan/coord.h"
#include "bitplan/task.h"
#include "bitplan/worker.h"
#include "coord_test_util.h"

#define HB "200"

typedef struct cluster {
    char client_ep[64], worker_ep[64];
    char dir[1024];
    pid_t serve;
    pid_t workers[8];
    int n_workers;
    tclient tc;
} cluster;

static void start_worker(cluster *c, int i)
{
    char log[1200];
    snprintf(log, sizeof log, "%s/worker%d.log", c->dir, i);
    c->workers[i] = spawn_bp(log, "worker", "--connect", c->worker_ep, "--heartbeat-ms", HB,
                             "--threads", "1", (char *)NULL);
    assert_true(c->workers[i] > 0);
}

/* serve (extra args NULL-terminated after n_workers) + n workers */
static void start_cluster(cluster *c, const char *name, int port, int n_workers,
                          const char *stall_ms)
{
    memset(c, 0, sizeof *c);
    fresh_dir(c->dir, sizeof c->dir, name);
    snprintf(c->client_ep, sizeof c->client_ep, "tcp://127.0.0.1:%d", port);
    snprintf(c->worker_ep, sizeof c->worker_ep, "tcp://127.0.0.1:%d", port + 1);
    char log[1200];
    snprintf(log, sizeof log, "%s/serve.log", c->dir);
    c->serve = spawn_bp(log, "serve", "--bind", c->client_ep, "--workers-bind", c->worker_ep,
                        "--heartbeat-ms", HB, "--liveness", "3", "--stall-ms", stall_ms,
                        (char *)NULL);
    assert_true(c->serve > 0);
    c->n_workers = n_workers;
    for (int i = 0; i < n_workers; i++)
        start_worker(c, i);
    tc_open(&c->tc, c->client_ep);
}

static void stop_cluster(cluster *c)
{
    tc_close(&c->tc);
    for (int i = 0; i < c->n_workers; i++)
        kill_kid(c->workers[i], SIGKILL);
    kill_kid(c->serve, SIGTERM);
}

/* Restart workers that exited (what systemd/k8s would do). */
static void supervise(cluster *c)
{
    for (int i = 0; i < c->n_workers; i++)
        if (kid_exited(c->workers[i]))
            start_worker(c, i);
}

/* The reference: run the job in this process with the job module's local
 * executor. */
static char *reference(const char *spec)
{
    char *json = NULL;
    bp_error e;
    int rc = bp_job_run_local(spec, strlen(spec), 1, &json, &e);
    if (rc != BP_OK)
        fail_msg("local run failed: %s", e.msg);
    return json;
}

static char *run_job(cluster *c, const char *spec, long ms)
{
    char job[32], err[512] = "", state[16];
    assert_int_equal(tc_submit(&c->tc, spec, job, err, sizeof err), BP_OK);
    int64_t until = t_now_ms() + ms;
    state[0] = '\0';
    while (t_now_ms() < until) {
        supervise(c);
        tc_wait_job(&c->tc, c->client_ep, job, 200, state, err, sizeof err);
        if (state[0])
            break;
    }
    if (strcmp(state, "done"))
        fail_msg("job %s ended as '%s': %s", job, state, err);
    return tc_result(&c->tc, job);
}

static int setup(void **state)
{
    (void)state;
    setenv("BITPLAN_TEST_KINDS", "1", 1);
    bp_runtime_register_kinds();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kill_all_kids();
    return 0;
}

static void test_cluster_clean_run_identical(void **state)
{
    (void)state;
    const char *spec = "{\"kind\":\"test\",\"tasks\":24,\"sleep_ms\":30,\"seed\":11,\"stages\":3}";
    char *ref = reference(spec);
    assert_non_null(ref);
    cluster c;
    start_cluster(&c, "cluster-clean3", 27100, 3, "5000");
    char *r3 = run_job(&c, spec, 30000);
    stop_cluster(&c);
    start_cluster(&c, "cluster-clean1", 27102, 1, "5000");
    char *r1 = run_job(&c, spec, 30000);
    stop_cluster(&c);
    bp_coord_embedded_opts eo;
    bp_coord_embedded_opts_default(&eo);
    eo.n_workers = 2;
    eo.quiet = 1;
    eo.exe = BP_BINARY;
    eo.timeout_ms = 30000;
    char *re = NULL;
    bp_error e;
    int rc = bp_coord_run_embedded_ex(spec, &eo, &re, &e);
    if (rc != BP_OK)
        fail_msg("embedded: %s", e.msg);
    assert_non_null(r3);
    assert_non_null(r1);
    assert_string_equal(r3, ref);
    assert_string_equal(r1, ref);
    assert_string_equal(re, ref);
    free(ref);
    free(r3);
    free(r1);
    free(re);
}

/* A worker killed with SIGKILL mid-job: its task is retried elsewhere. */
static void test_cluster_worker_killed(void **state)
{
    (void)state;
    const char *spec = "{\"kind\":\"test\",\"tasks\":30,\"sleep_ms\":80,\"seed\":12}";
    char *ref = reference(spec);
    cluster c;
    start_cluster(&c, "cluster-kill", 27104, 3, "5000");
    char job[32], err[512];
    assert_int_equal(tc_submit(&c.tc, spec, job, err, sizeof err), BP_OK);
    assert_true(tc_wait_done(&c.tc, job, 4, 20000));
    kill_kid(c.workers[0], SIGKILL);
    c.n_workers = 3; /* keep the slot; it is not restarted */
    c.workers[0] = -1;
    char st[16];
    tc_wait_job(&c.tc, c.client_ep, job, 30000, st, err, sizeof err);
    assert_string_equal(st, "done");
    char *r = tc_result(&c.tc, job);
    assert_non_null(r);
    assert_string_equal(r, ref);
    stop_cluster(&c);
    free(r);
    free(ref);
}

/* A worker frozen with SIGSTOP: no heartbeats, detected as dead, its task
 * moves; when it resumes its late result is dropped and it re-registers. */
static void test_cluster_worker_stopped(void **state)
{
    (void)state;
    const char *spec = "{\"kind\":\"test\",\"tasks\":30,\"sleep_ms\":80,\"seed\":13}";
    char *ref = reference(spec);
    cluster c;
    start_cluster(&c, "cluster-stop", 27106, 3, "5000");
    char job[32], err[512];
    assert_int_equal(tc_submit(&c.tc, spec, job, err, sizeof err), BP_OK);
    assert_true(tc_wait_done(&c.tc, job, 4, 20000));
    kill(c.workers[1], SIGSTOP);
    int64_t t0 = t_now_ms();
    char st[16];
    tc_wait_job(&c.tc, c.client_ep, job, 30000, st, err, sizeof err);
    assert_string_equal(st, "done");
    assert_true(t_now_ms() - t0 < 20000);
    kill(c.workers[1], SIGCONT);
    char *r = tc_result(&c.tc, job);
    assert_non_null(r);
    assert_string_equal(r, ref);
    /* the resumed worker is told to disconnect and registers again */
    t_sleep_ms(1500);
    char *log = slurp_file(c.dir[0] ? (strcat(c.dir, "/worker1.log"), c.dir) : "");
    assert_non_null(log);
    assert_non_null(strstr(log, "registering again"));
    free(log);
    stop_cluster(&c);
    free(r);
    free(ref);
}

/* A task whose computation hangs while its worker's socket stays alive: the
 * progress counter stops, the lease expires after the stall window, the
 * worker re-executes itself, and the task runs again (once_dir makes it
 * hang only the first time). */
static void test_cluster_hang_detected(void **state)
{
    (void)state;
    cluster c;
    start_cluster(&c, "cluster-hang", 27108, 2, "1500");
    char spec[4096], count[1200], once[1200];
    snprintf(count, sizeof count, "%s/count", c.dir);
    snprintf(once, sizeof once, "%s/once", c.dir);
    mkdir(once, 0700);
    snprintf(spec, sizeof spec,
             "{\"kind\":\"test\",\"tasks\":10,\"sleep_ms\":40,\"seed\":14,\"hang_task\":4,"
             "\"count_file\":\"%s\",\"once_dir\":\"%s\"}",
             count, once);
    char *r = run_job(&c, spec, 30000);
    assert_non_null(r);
    assert_int_equal(count_runs(count, 4), 2); /* hung once, then completed */
    /* same values as a run where nothing hangs */
    char *ref = reference("{\"kind\":\"test\",\"tasks\":10,\"sleep_ms\":0,\"seed\":14}");
    assert_string_equal(r, ref);
    char log[1200];
    snprintf(log, sizeof log, "%s/serve.log", c.dir);
    char *sl = slurp_file(log);
    assert_non_null(strstr(sl, "stalled"));
    free(sl);
    stop_cluster(&c);
    free(r);
    free(ref);
}

/* A task that kills its worker every time is quarantined after 3 attempts;
 * its job fails naming the task; another job keeps running to completion. */
static void test_cluster_crash_task_quarantined(void **state)
{
    (void)state;
    const char *bad = "{\"kind\":\"test\",\"tasks\":6,\"sleep_ms\":20,\"seed\":15,\"crash_task\":2}";
    const char *good = "{\"kind\":\"test\",\"tasks\":16,\"sleep_ms\":60,\"seed\":16}";
    char *ref = reference(good);
    cluster c;
    start_cluster(&c, "cluster-crash", 27110, 3, "5000");
    char jb[32], jg[32], err[512] = "";
    assert_int_equal(tc_submit(&c.tc, bad, jb, err, sizeof err), BP_OK);
    assert_int_equal(tc_submit(&c.tc, good, jg, err, sizeof err), BP_OK);
    char sb[16] = "", sg[16] = "", eb[512] = "", eg[512] = "";
    int64_t until = t_now_ms() + 40000;
    while (t_now_ms() < until && (!sb[0] || !sg[0])) {
        supervise(&c);
        if (!sb[0])
            tc_wait_job(&c.tc, c.client_ep, jb, 100, sb, eb, sizeof eb);
        if (!sg[0])
            tc_wait_job(&c.tc, c.client_ep, jg, 100, sg, eg, sizeof eg);
    }
    assert_string_equal(sb, "failed");
    assert_non_null(strstr(eb, "task 2"));
    assert_non_null(strstr(eb, "quarantined"));
    assert_string_equal(sg, "done");
    char *r = tc_result(&c.tc, jg);
    assert_string_equal(r, ref);
    /* the failed job's result request gives its error */
    uint64_t id = ++c.tc.id;
    bp_proto_encode_result(&c.tc.out, id, bp_str_c(jb), NULL);
    tc_send(&c.tc);
    assert_int_equal(tc_wait(&c.tc, id, 3000), BP_OK);
    assert_int_equal(c.tc.msg.type, BP_MSG_ERROR);
    stop_cluster(&c);
    free(r);
    free(ref);
}

/* A task that returns an error fails its job at once (no retries). */
static void test_cluster_failing_task_fails_job(void **state)
{
    (void)state;
    cluster c;
    start_cluster(&c, "cluster-fail", 27112, 2, "5000");
    char count[1200], spec[4096];
    snprintf(count, sizeof count, "%s/count", c.dir);
    snprintf(spec, sizeof spec,
             "{\"kind\":\"test\",\"tasks\":8,\"sleep_ms\":10,\"seed\":17,\"fail_task\":5,"
             "\"count_file\":\"%s\"}", count);
    char job[32], err[512] = "", st[16];
    assert_int_equal(tc_submit(&c.tc, spec, job, err, sizeof err), BP_OK);
    tc_wait_job(&c.tc, c.client_ep, job, 20000, st, err, sizeof err);
    assert_string_equal(st, "failed");
    assert_non_null(strstr(err, "task 5"));
    assert_non_null(strstr(err, "fails on purpose"));
    assert_int_equal(count_runs(count, 5), 1);
    stop_cluster(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_cluster_clean_run_identical, teardown),
        cmocka_unit_test_teardown(test_cluster_worker_killed, teardown),
        cmocka_unit_test_teardown(test_cluster_worker_stopped, teardown),
        cmocka_unit_test_teardown(test_cluster_hang_detected, teardown),
        cmocka_unit_test_teardown(test_cluster_crash_task_quarantined, teardown),
        cmocka_unit_test_teardown(test_cluster_failing_task_fails_job, teardown),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
