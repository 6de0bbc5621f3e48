/* Integration: persistence. A coordinator killed with SIGKILL mid-job and
 * restarted on the same --state resumes the job without redoing finished
 * tasks; a corrupt cache entry is ignored and recomputed; a repeated job is
 * served from the cache. Ports 27200-27209. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bitplan/cache.h"
#include "bitplan/task.h"
#include "bitplan/worker.h"
#include "coord_test_util.h"

#define CEP "tcp://127.0.0.1:27200"
#define WEP "tcp://127.0.0.1:27201"

static char dir[1024], state_dir[1200], count[1200];

static pid_t start_serve(void)
{
    char log[1300];
    snprintf(log, sizeof log, "%s/serve.log", dir);
    return spawn_bp(log, "serve", "--bind", CEP, "--workers-bind", WEP, "--state", state_dir,
                    "--heartbeat-ms", "200", (char *)NULL);
}

static int setup(void **st)
{
    (void)st;
    setenv("BITPLAN_TEST_KINDS", "1", 1);
    bp_runtime_register_kinds();
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    kill_all_kids();
    return 0;
}

static void test_restart_resumes_without_recomputing(void **st)
{
    (void)st;
    fresh_dir(dir, sizeof dir, "restart");
    snprintf(state_dir, sizeof state_dir, "%s/state", dir);
    snprintf(count, sizeof count, "%s/count", dir);
    const int N = 16;
    char spec[4096];
    snprintf(spec, sizeof spec,
             "{\"kind\":\"test\",\"tasks\":%d,\"sleep_ms\":120,\"seed\":21,\"count_file\":\"%s\"}",
             N, count);
    char *ref;
    {
        char plain[256];
        snprintf(plain, sizeof plain, "{\"kind\":\"test\",\"tasks\":%d,\"sleep_ms\":0,\"seed\":21}",
                 N);
        bp_error e;
        assert_int_equal(bp_job_run_local(plain, strlen(plain), 1, &ref, &e), BP_OK);
    }
    pid_t serve = start_serve();
    char wlog[1300];
    snprintf(wlog, sizeof wlog, "%s/workers.log", dir);
    for (int i = 0; i < 2; i++)
        spawn_bp(wlog, "worker", "--connect", WEP, "--heartbeat-ms", "200", (char *)NULL);
    tclient tc;
    tc_open(&tc, CEP);
    char job[32], err[512] = "";
    assert_int_equal(tc_submit(&tc, spec, job, err, sizeof err), BP_OK);
    assert_true(tc_wait_done(&tc, job, 6, 20000));
    kill_kid(serve, SIGKILL);

    /* Which tasks had their result cached at the moment of the kill? */
    bp_cache *cache = NULL;
    char cdir[1300];
    snprintf(cdir, sizeof cdir, "%s/cache", state_dir);
    assert_int_equal(bp_cache_open(cdir, &cache, NULL), BP_OK);
    int cached[64] = {0}, n_cached = 0;
    for (int i = 0; i < N; i++) {
        char h[BP_HASH_HEX_LEN + 1], path[2048];
        bp_runtime_test_task_hash((uint64_t)i, 21, "ok", h);
        bp_cache_path(cache, h, path, sizeof path);
        cached[i] = access(path, F_OK) == 0;
        n_cached += cached[i];
    }
    assert_true(n_cached >= 6);
    /* corrupt one cached entry: it must be ignored and recomputed */
    int corrupt = -1;
    for (int i = 0; i < N && corrupt < 0; i++)
        if (cached[i])
            corrupt = i;
    {
        char h[BP_HASH_HEX_LEN + 1], path[2048];
        bp_runtime_test_task_hash((uint64_t)corrupt, 21, "ok", h);
        bp_cache_path(cache, h, path, sizeof path);
        FILE *fp = fopen(path, "r+b");
        fseek(fp, 20, SEEK_SET);
        fputc('!', fp);
        fclose(fp);
    }
    bp_cache_close(&cache);

    serve = start_serve();
    char state[16];
    tc_wait_job(&tc, CEP, job, 30000, state, err, sizeof err);
    assert_string_equal(state, "done");
    char *r = tc_result(&tc, job);
    assert_non_null(r);
    assert_string_equal(r, ref);
    for (int i = 0; i < N; i++) {
        int runs = count_runs(count, (unsigned long)i);
        if (i == corrupt)
            assert_int_equal(runs, 2);
        else if (cached[i])
            assert_int_equal(runs, 1); /* finished before the kill: never redone */
        else
            assert_true(runs >= 1);
    }
    /* The same job again: every task is a cache hit, nothing runs. */
    int before = count_runs(count, 0);
    char job2[32];
    assert_int_equal(tc_submit(&tc, spec, job2, err, sizeof err), BP_OK);
    tc_wait_job(&tc, CEP, job2, 10000, state, err, sizeof err);
    assert_string_equal(state, "done");
    char *r2 = tc_result(&tc, job2);
    assert_string_equal(r2, ref);
    assert_int_equal(count_runs(count, 0), before);
    /* and a third restart still knows both finished jobs */
    kill_kid(serve, SIGKILL);
    serve = start_serve();
    tc_close(&tc);
    tc_open(&tc, CEP);
    char *r3 = NULL;
    for (int k = 0; k < 50 && !r3; k++) {
        r3 = tc_result(&tc, job);
        if (!r3) {
            tc_close(&tc);
            tc_open(&tc, CEP);
        }
    }
    assert_non_null(r3);
    assert_string_equal(r3, ref);
    tc_close(&tc);
    free(r);
    free(r2);
    free(r3);
    free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_restart_resumes_without_recomputing, teardown),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
