/* Integration with the real "plan" job: a coordinator and 3 workers as
 * processes of the bitplan executable on 127.0.0.1 (ports 27300-27399). The
 * plan must be byte-identical to the offline one (and survive a killed
 * worker); bad job specs get clear errors while other jobs keep running. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bitplan/coord.h"
#include "bitplan/job_spec.h"
#include "bitplan/task.h"
#include "bitplan/worker.h"
#include "coord_test_util.h"
#include "../job/job_testutil.h"

#define MODEL BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"
#define HB "200"

typedef struct cluster {
    char client_ep[64], worker_ep[64], dir[1024];
    pid_t serve, workers[4];
    int n_workers;
    tclient tc;
} cluster;

static void start_worker(cluster *c, int i)
{
    char log[1200];
    snprintf(log, sizeof log, "%s/worker%d.log", c->dir, i);
    c->workers[i] = spawn_bp(log, "worker", "--connect", c->worker_ep, "--heartbeat-ms", HB, "--threads", "1",
                             (char *)NULL);
    assert_true(c->workers[i] > 0);
}

static void start_cluster(cluster *c, const char *name, int port, int n)
{
    memset(c, 0, sizeof *c);
    fresh_dir(c->dir, sizeof c->dir, name);
    snprintf(c->client_ep, sizeof c->client_ep, "tcp://127.0.0.1:%d", port);
    snprintf(c->worker_ep, sizeof c->worker_ep, "tcp://127.0.0.1:%d", port + 1);
    char log[1200], state[1200];
    snprintf(log, sizeof log, "%s/serve.log", c->dir);
    snprintf(state, sizeof state, "%s/state", c->dir);
    c->serve = spawn_bp(log, "serve", "--bind", c->client_ep, "--workers-bind", c->worker_ep, "--state", state,
                        "--heartbeat-ms", HB, "--liveness", "3", "--stall-ms", "20000", (char *)NULL);
    assert_true(c->serve > 0);
    c->n_workers = n;
    for (int i = 0; i < n; i++)
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

static char *wait_result(cluster *c, const char *job, long ms, char *state, char *err, size_t cap)
{
    tc_wait_job(&c->tc, c->client_ep, job, ms, state, err, cap);
    return strcmp(state, "done") ? NULL : tc_result(&c->tc, job);
}

static int setup(void **state)
{
    (void)state;
    setenv("TMPDIR", BP_TEST_TMPDIR, 1);
    bp_runtime_register_kinds();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kill_all_kids();
    return 0;
}

static const char *SPEC_MSE = "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":3.25}}";
static const char *SPEC_GPTQ =
    "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":3.0},"
    "\"formats\":[\"int2_g64_asym\",\"int3_g64_asym\",\"int4_g64_asym\",\"int8_pc_sym\"],"
    "\"metric\":\"gptq\",\"calibration\":{\"text\":\"" MODEL "/calib.txt\",\"seqs\":10,\"ctx\":48},"
    "\"evo\":{\"generations\":2,\"lambda\":3,\"windows\":4}}";

static void test_plan_daemon_matches_offline(void **state)
{
    (void)state;
    cluster c;
    start_cluster(&c, "plan-clean", 27300, 3);
    char job1[32], job2[32], err[512] = "", st[16];
    assert_int_equal(tc_submit(&c.tc, SPEC_MSE, job1, err, sizeof err), BP_OK);
    assert_int_equal(tc_submit(&c.tc, SPEC_GPTQ, job2, err, sizeof err), BP_OK);
    char *r1 = wait_result(&c, job1, 120000, st, err, sizeof err);
    if (!r1)
        fail_msg("job 1 ended as '%s': %s", st, err);
    char *r2 = wait_result(&c, job2, 180000, st, err, sizeof err);
    if (!r2)
        fail_msg("job 2 ended as '%s': %s", st, err);
    char *o1 = run_direct(SPEC_MSE), *o2 = run_direct(SPEC_GPTQ);
    assert_string_equal(r1, o1);
    assert_string_equal(r2, o2);
    free(r1);
    free(r2);
    free(o1);
    free(o2);
    stop_cluster(&c);
}

static void test_plan_daemon_worker_killed(void **state)
{
    (void)state;
    cluster c;
    start_cluster(&c, "plan-kill", 27310, 3);
    char job[32], err[512] = "", st[16];
    /* A fresh spec (other budget and formats) so no cached result helps. */
    const char *spec = "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":4.1},"
                       "\"formats\":[\"int3_g64_sym\",\"int4_g64_sym\",\"int5_g64_sym\",\"nvfp4\",\"mxfp4\"]}";
    assert_int_equal(tc_submit(&c.tc, spec, job, err, sizeof err), BP_OK);
    tc_wait_done(&c.tc, job, 3, 30000);
    kill_kid(c.workers[0], SIGKILL);
    c.workers[0] = -1;
    char *r = wait_result(&c, job, 120000, st, err, sizeof err);
    if (!r)
        fail_msg("job ended as '%s': %s", st, err);
    char *o = run_direct(spec);
    assert_string_equal(r, o);
    free(r);
    free(o);
    stop_cluster(&c);
}

static void test_plan_daemon_bad_specs(void **state)
{
    (void)state;
    cluster c;
    start_cluster(&c, "plan-bad", 27320, 2);
    char good[32], job[32], err[512] = "", st[16];
    assert_int_equal(tc_submit(&c.tc, SPEC_MSE, good, err, sizeof err), BP_OK);
    /* Missing model, unknown format: refused at submit, or failed on status. */
    const char *bad[] = {
        "{\"kind\":\"plan\",\"model\":\"/nonexistent/model\",\"budget\":{\"bits\":3}}",
        "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":3},\"formats\":[\"int9_g7_sym\"]}",
        "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":1.2}}",
    };
    const char *expect[] = {"/nonexistent/model", "int9", "smallest achievable"};
    for (int i = 0; i < 3; i++) {
        err[0] = '\0';
        int rc = tc_submit(&c.tc, bad[i], job, err, sizeof err);
        if (rc == BP_OK) {
            tc_wait_job(&c.tc, c.client_ep, job, 180000, st, err, sizeof err);
            assert_string_equal(st, "failed");
        }
        if (!strstr(err, expect[i]))
            fail_msg("spec %d: error '%s' does not mention '%s'", i, err, expect[i]);
    }
    char *r = wait_result(&c, good, 120000, st, err, sizeof err);
    if (!r)
        fail_msg("good job ended as '%s': %s", st, err);
    free(r);
    stop_cluster(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_daemon_matches_offline),
        cmocka_unit_test(test_plan_daemon_worker_killed),
        cmocka_unit_test(test_plan_daemon_bad_specs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
