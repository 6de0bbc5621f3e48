/* Integration: CURVE with the ZAP allow-list (ports 27220-27229). A client
 * with a listed key works, a non-listed key and a plain client are refused,
 * a listed worker gets work done. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "coord_test_util.h"

#define CEP "tcp://127.0.0.1:27220"
#define WEP "tcp://127.0.0.1:27221"

static char dir[1024];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int teardown(void **st)
{
    (void)st;
    kill_all_kids();
    return 0;
}

static void test_curve_allow_list(void **st)
{
    (void)st;
    setenv("BITPLAN_TEST_KINDS", "1", 1);
    fresh_dir(dir, sizeof dir, "curve");
    const char *names[] = {"server", "client", "worker", "stranger"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(sh("%s keygen --out %s/%s > /dev/null", BP_BINARY, dir, names[i]), 0);
    /* secret keys are private; keygen refuses to overwrite */
    char p[1200];
    snprintf(p, sizeof p, "%s/client.key", dir);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_not_equal(sh("%s keygen --out %s/client 2>/dev/null", BP_BINARY, dir), 0);
    assert_int_equal(sh("cat %s/client.pub %s/worker.pub > %s/allow.txt", dir, dir, dir), 0);
    char log[1200], key[1200], allow[1200], skey[1200], wkey[1200];
    snprintf(log, sizeof log, "%s/serve.log", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(allow, sizeof allow, "%s/allow.txt", dir);
    snprintf(skey, sizeof skey, "%s/server.pub", dir);
    snprintf(wkey, sizeof wkey, "%s/worker.key", dir);
    spawn_bp(log, "serve", "--bind", CEP, "--workers-bind", WEP, "--curve", "--key", key,
             "--allow-keys", allow, (char *)NULL);
    spawn_bp(log, "worker", "--connect", WEP, "--server-key", skey, "--key", wkey, (char *)NULL);
    t_sleep_ms(300);
    /* listed client: works, and its job is run by the listed worker */
    assert_int_equal(sh("%s jobs --connect " CEP " --server-key %s --key %s/client.key "
                        "> /dev/null",
                        BP_BINARY, skey, dir),
                     0);
    FILE *fp = fopen(p, "r"); /* reuse p for the job file */
    fclose(fp);
    snprintf(p, sizeof p, "%s/job.json", dir);
    fp = fopen(p, "w");
    fputs("{\"kind\":\"test\",\"tasks\":3,\"seed\":5}", fp);
    fclose(fp);
    assert_int_equal(sh("id=$(%s submit --connect " CEP " --server-key %s --key %s/client.key %s)"
                        " && %s result --wait --timeout-ms 20000 --connect " CEP
                        " --server-key %s --key %s/client.key $id > %s/result.json",
                        BP_BINARY, skey, dir, p, BP_BINARY, skey, dir, dir),
                     0);
    /* a key that is not on the list: refused (no reply, exit 1) */
    assert_int_equal(sh("%s jobs --connect " CEP " --timeout-ms 1500 --server-key %s "
                        "--key %s/stranger.key 2>/dev/null",
                        BP_BINARY, skey, dir),
                     1);
    /* no CURVE at all: refused */
    assert_int_equal(sh("%s jobs --connect " CEP " --timeout-ms 1000 2>/dev/null", BP_BINARY), 1);
    char *sl = slurp_file(log);
    assert_non_null(strstr(sl, "refused a connection"));
    assert_non_null(strstr(sl, "(CURVE)"));
    free(sl);
    /* a malformed allow-list stops the daemon from starting (fail closed) */
    assert_int_equal(sh("echo not-a-key > %s/bad.txt", dir), 0);
    assert_int_equal(sh("%s serve --bind tcp://127.0.0.1:27222 --workers-bind "
                        "tcp://127.0.0.1:27223 --curve --key %s --allow-keys %s/bad.txt "
                        "2>/dev/null",
                        BP_BINARY, key, dir),
                     1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_curve_allow_list, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
