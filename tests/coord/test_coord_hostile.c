/* Integration: bad job specs and hostile messages against a running daemon
 * (ports 27210-27219). The daemon answers with errors, keeps running other
 * jobs and still answers `jobs` afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bitplan/worker.h"
#include "coord_test_util.h"

#define CEP "tcp://127.0.0.1:27210"
#define WEP "tcp://127.0.0.1:27211"

static char dir[1024];

static int setup(void **st)
{
    (void)st;
    setenv("BITPLAN_TEST_KINDS", "1", 1);
    fresh_dir(dir, sizeof dir, "hostile");
    char log[1200];
    snprintf(log, sizeof log, "%s/serve.log", dir);
    spawn_bp(log, "serve", "--bind", CEP, "--workers-bind", WEP, "--heartbeat-ms", "200",
             (char *)NULL);
    spawn_bp(log, "worker", "--connect", WEP, "--heartbeat-ms", "200", (char *)NULL);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    kill_all_kids();
    return 0;
}

static void expect_error(tclient *c, uint64_t id, int code, const char *needle)
{
    assert_int_equal(tc_wait(c, id, 5000), BP_OK);
    assert_int_equal(c->msg.type, BP_MSG_ERROR);
    if (code)
        assert_int_equal(bp_proto_bp_code(c->msg.u.error.code), code);
    if (needle) {
        char m[600];
        snprintf(m, sizeof m, "%.*s", (int)c->msg.u.error.message.len, c->msg.u.error.message.ptr);
        if (!strstr(m, needle))
            fail_msg("error '%s' does not mention '%s'", m, needle);
    }
}

static void jobs_still_answered(const char *ep)
{
    tclient c;
    tc_open(&c, ep);
    uint64_t id = ++c.id;
    bp_proto_encode_jobs(&c.out, id, NULL);
    tc_send(&c);
    assert_int_equal(tc_wait(&c, id, 5000), BP_OK);
    assert_int_equal(c.msg.type, BP_MSG_JOBS_REPLY);
    tc_close(&c);
}

static void test_bad_specs_rejected_other_job_runs(void **st)
{
    (void)st;
    tclient c;
    tc_open(&c, CEP);
    char job[32], err[512];
    assert_int_equal(tc_submit(&c, "{\"kind\":\"test\",\"tasks\":12,\"sleep_ms\":50,\"seed\":3}",
                               job, err, sizeof err),
                     BP_OK);
    assert_int_equal(tc_submit(&c, "{\"kind\":\"nonesuch\"}", job + 16, err, sizeof err),
                     BP_EUNSUPPORTED);
    assert_non_null(strstr(err, "unknown job kind 'nonesuch'"));
    assert_int_equal(tc_submit(&c, "{\"kind\":\"test\",", job + 16, err, sizeof err), BP_EFORMAT);
    assert_non_null(strstr(err, "invalid JSON"));
    assert_int_equal(tc_submit(&c, "{\"tasks\":3}", job + 16, err, sizeof err), BP_EINVAL);
    assert_non_null(strstr(err, "missing field 'kind'"));
    assert_int_equal(tc_submit(&c, "{\"kind\":\"test\"}", job + 16, err, sizeof err), BP_EINVAL);
    assert_non_null(strstr(err, "missing field 'tasks'"));
    assert_int_equal(tc_submit(&c, "{\"kind\":\"test\",\"tasks\":-4}", job + 16, err, sizeof err),
                     BP_EINVAL);
    assert_int_equal(tc_submit(&c, "[1,2]", job + 16, err, sizeof err), BP_EINVAL);
    char fin[16];
    job[15] = '\0';
    tc_wait_job(&c, CEP, job, 20000, fin, err, sizeof err);
    assert_string_equal(fin, "done");
    tc_close(&c);
}

static void test_hostile_client_messages(void **st)
{
    (void)st;
    tclient c;
    tc_open(&c, CEP);
    /* garbage frames */
    const char junk[] = "\xdd\xff\xff\xff\xff";
    zmq_send(c.sock, junk, 5, 0);
    expect_error(&c, 0, BP_EPROTO, NULL);
    zmq_send(c.sock, "hello", 5, ZMQ_SNDMORE);
    zmq_send(c.sock, "world", 5, 0);
    expect_error(&c, 0, BP_EPROTO, NULL);
    /* a valid frame followed by 40 extra frames */
    bp_proto_encode_jobs(&c.out, 77, NULL);
    for (int i = 0; i < 40; i++)
        zmq_send(c.sock, "x", 1, ZMQ_SNDMORE);
    zmq_send(c.sock, "x", 1, 0);
    expect_error(&c, 0, BP_EPROTO, "frames");
    /* a worker message on the client socket: wrong sender type */
    bp_proto_encode_ready(&c.out, 78, bp_str_c("intruder"), 1, 1, NULL);
    tc_send(&c);
    expect_error(&c, 78, BP_EPROTO, NULL);
    /* a coordinator reply type sent to the coordinator */
    bp_proto_encode_ok(&c.out, 79, NULL);
    tc_send(&c);
    expect_error(&c, 79, BP_EPROTO, NULL);
    /* unknown job ids */
    bp_proto_encode_status(&c.out, 80, bp_str_c("j999999"), NULL);
    tc_send(&c);
    expect_error(&c, 80, BP_ENOTFOUND, "no job");
    bp_proto_encode_result(&c.out, 81, bp_str_c("../../etc/passwd\x01"), NULL);
    tc_send(&c);
    expect_error(&c, 81, BP_ENOTFOUND, NULL);
    bp_proto_encode_cancel(&c.out, 82, bp_str_c("j424242"), NULL);
    tc_send(&c);
    expect_error(&c, 82, BP_ENOTFOUND, NULL);
    /* an oversized spec (1.5 MiB header: under the socket limit, over the
     * spec limit) gets an error */
    size_t big = 1536 * 1024;
    char *spec = malloc(big + 1);
    memset(spec, ' ', big);
    spec[big] = '\0';
    bp_proto_out o;
    bp_proto_limits lim;
    bp_proto_limits_default(&lim);
    lim.max_job_spec_bytes = 4u << 20;
    bp_proto_out_init(&o, &lim);
    assert_int_equal(bp_proto_encode_submit(&o, 83, bp_str_c(spec), NULL), BP_OK);
    bp_proto_send(c.sock, NULL, 0, &o, NULL);
    expect_error(&c, 83, BP_EPROTO, NULL);
    bp_proto_out_clear(&o);
    free(spec);
    /* a frame over ZMQ_MAXMSGSIZE: libzmq drops that connection (no reply) */
    tclient big_c;
    tc_open(&big_c, CEP);
    size_t huge = 3u << 20;
    char *blob = calloc(1, huge);
    zmq_send(big_c.sock, blob, huge, 0);
    free(blob);
    assert_int_equal(tc_wait(&big_c, 0, 1000), BP_ETIMEOUT);
    tc_close(&big_c);
    /* wrong protocol version */
    const unsigned char v2[] = {0x83, 0xa1, 'v', 0x02, 0xa1, 't', 0xa4, 'j', 'o', 'b', 's',
                                0xa2, 'i', 'd', 0x54};
    zmq_send(c.sock, v2, sizeof v2, 0);
    expect_error(&c, 0x54, BP_EPROTO, "version");
    tc_close(&c);
    jobs_still_answered(CEP);
}

static void test_hostile_worker_messages(void **st)
{
    (void)st;
    tclient w;
    tc_open(&w, WEP);
    /* garbage on the worker socket: disconnect */
    zmq_send(w.sock, "\xc1", 1, 0);
    assert_int_equal(tc_wait(&w, 0, 3000), BP_OK);
    assert_int_equal(w.msg.type, BP_MSG_DISCONNECT);
    /* heartbeat before ready: disconnect */
    bp_proto_encode_heartbeat(&w.out, 5, 0, NULL, NULL);
    tc_send(&w);
    assert_int_equal(tc_wait(&w, 0, 3000), BP_OK);
    assert_int_equal(w.msg.type, BP_MSG_DISCONNECT);
    /* ready -> welcome; a result for a task it does not hold -> disconnect */
    bp_proto_encode_ready(&w.out, 6, bp_str_c("fake"), 1, 99, NULL);
    tc_send(&w);
    assert_int_equal(tc_wait(&w, 0, 3000), BP_OK);
    assert_int_equal(w.msg.type, BP_MSG_WELCOME);
    assert_int_equal(w.msg.u.welcome.heartbeat_ms, 200);
    bp_proto_encode_task_result(&w.out, 7, 123456, bp_str_c("blake2b256:00"), NULL, 0, NULL, 0,
                                NULL);
    tc_send(&w);
    assert_int_equal(tc_wait(&w, 0, 3000), BP_OK);
    assert_int_equal(w.msg.type, BP_MSG_DISCONNECT);
    tc_close(&w);
    jobs_still_answered(CEP);
    /* and real work still gets done */
    tclient c;
    tc_open(&c, CEP);
    char job[32], err[512], s[16];
    assert_int_equal(tc_submit(&c, "{\"kind\":\"test\",\"tasks\":4,\"seed\":9}", job, err,
                               sizeof err), BP_OK);
    tc_wait_job(&c, CEP, job, 20000, s, err, sizeof err);
    assert_string_equal(s, "done");
    tc_close(&c);
}

static void test_cli_client_commands(void **st)
{
    (void)st;
    char cmd[4096], spec[1200], out[1200];
    snprintf(spec, sizeof spec, "%s/job.json", dir);
    snprintf(out, sizeof out, "%s/result.json", dir);
    FILE *fp = fopen(spec, "w");
    fputs("{\"kind\":\"test\",\"tasks\":5,\"seed\":4}\n", fp);
    fclose(fp);
    snprintf(cmd, sizeof cmd, "%s submit --connect " CEP " %s > %s/id.txt", BP_BINARY, spec, dir);
    assert_int_equal(system(cmd), 0);
    char idp[1200];
    snprintf(idp, sizeof idp, "%s/id.txt", dir);
    char *id = slurp_file(idp);
    id[strcspn(id, "\n")] = '\0';
    snprintf(cmd, sizeof cmd, "%s result --wait --connect " CEP " --out %s %s", BP_BINARY, out,
             id);
    assert_int_equal(system(cmd), 0);
    char *r = slurp_file(out);
    assert_non_null(strstr(r, "\"digest\""));
    snprintf(cmd, sizeof cmd, "%s status --connect " CEP " %s | grep -q 'state: done'",
             BP_BINARY, id);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s jobs --connect " CEP " | grep -q '%s'", BP_BINARY, id);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s cancel --connect " CEP " %s 2>/dev/null", BP_BINARY, id);
    assert_int_not_equal(system(cmd), 0); /* already done */
    snprintf(cmd, sizeof cmd, "%s status --connect tcp://127.0.0.1:27219 --timeout-ms 300 x "
                              "2>/dev/null", BP_BINARY);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    const char *helps[] = {"serve", "worker", "submit", "status", "result", "cancel", "jobs",
                           "keygen"};
    for (size_t i = 0; i < 8; i++) {
        snprintf(cmd, sizeof cmd, "%s %s --help > /dev/null", BP_BINARY, helps[i]);
        assert_int_equal(system(cmd), 0);
    }
    snprintf(cmd, sizeof cmd, "%s submit 2>/dev/null", BP_BINARY);
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    free(id);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_specs_rejected_other_job_runs),
        cmocka_unit_test(test_hostile_client_messages),
        cmocka_unit_test(test_hostile_worker_messages),
        cmocka_unit_test(test_cli_client_commands),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
