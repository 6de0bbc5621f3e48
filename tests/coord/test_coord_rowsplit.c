/* Row-block measure tasks through a real coordinator and workers
 * (processes of the bitplan executable on 127.0.0.1, ports 27600-27609):
 * the partial sums cross the wire and the cache, and the plan must still be
 * byte-identical to the offline (unsplit) one. */
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

/* nvfp4 makes the driver pass the tensor's absmax to every block. */
static const char *SPEC_MSE = "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":3.5},"
                              "\"formats\":[\"int2_g64_asym\",\"int3_g64_asym\",\"int4_g64_asym\",\"nvfp4\"],"
                              "\"split_rows\":64,\"split_min_weights\":0}";
static const char *SPEC_GPTQ =
    "{\"kind\":\"plan\",\"model\":\"" MODEL "\",\"budget\":{\"bits\":3.0},"
    "\"formats\":[\"int2_g64_asym\",\"int3_g64_asym\",\"int4_g64_asym\",\"nvfp4\"],"
    "\"metric\":\"gptq\",\"search\":\"ilp\",\"calibration\":{\"text\":\"" MODEL "/calib.txt\",\"seqs\":10,\"ctx\":48},"
    "\"split_rows\":128,\"split_min_weights\":0}";

static void test_rowsplit_daemon_matches_offline(void **state)
{
    (void)state;
    char dir[1024], client_ep[64], worker_ep[64], log[1200], st_dir[1200];
    fresh_dir(dir, sizeof dir, "rowsplit");
    snprintf(client_ep, sizeof client_ep, "tcp://127.0.0.1:%d", 27600);
    snprintf(worker_ep, sizeof worker_ep, "tcp://127.0.0.1:%d", 27601);
    snprintf(log, sizeof log, "%s/serve.log", dir);
    snprintf(st_dir, sizeof st_dir, "%s/state", dir);
    pid_t serve = spawn_bp(log, "serve", "--bind", client_ep, "--workers-bind", worker_ep, "--state", st_dir,
                           "--heartbeat-ms", HB, "--liveness", "3", "--stall-ms", "20000", (char *)NULL);
    assert_true(serve > 0);
    pid_t workers[2];
    for (int i = 0; i < 2; i++) {
        snprintf(log, sizeof log, "%s/worker%d.log", dir, i);
        workers[i] = spawn_bp(log, "worker", "--connect", worker_ep, "--heartbeat-ms", HB, "--threads", "1",
                              (char *)NULL);
        assert_true(workers[i] > 0);
    }
    tclient tc;
    tc_open(&tc, client_ep);
    const char *specs[] = {SPEC_MSE, SPEC_GPTQ};
    for (size_t k = 0; k < 2; k++) {
        char job[32], err[512] = "", state_s[16];
        assert_int_equal(tc_submit(&tc, specs[k], job, err, sizeof err), BP_OK);
        tc_wait_job(&tc, client_ep, job, 180000, state_s, err, sizeof err);
        if (strcmp(state_s, "done"))
            fail_msg("job %s ended as '%s': %s", job, state_s, err);
        char *r = tc_result(&tc, job), *o = run_direct(specs[k]);
        assert_non_null(r);
        assert_string_equal(r, o);
        /* More tasks than one per tensor plus the solve: blocks were sent. */
        uint64_t done = 0, total = 0;
        assert_int_equal(tc_status(&tc, job, state_s, &done, &total, NULL, 0), BP_OK);
        size_t tensors = 0;
        for (const char *p = o; (p = strstr(p, "\"format\"")) != NULL; p++)
            tensors++;
        assert_true(tensors > 0);
        assert_true(total > tensors + 1);
        assert_int_equal(done, total);
        free(r);
        free(o);
    }
    tc_close(&tc);
    for (int i = 0; i < 2; i++)
        kill_kid(workers[i], SIGKILL);
    kill_kid(serve, SIGTERM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rowsplit_daemon_matches_offline),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
