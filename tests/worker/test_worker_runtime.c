/* The worker process against a scripted coordinator (a ROUTER in this
 * test): ready, welcome, heartbeats carrying the progress counter, task ->
 * task_result echoing the input hash, unknown kind -> task_failed,
 * disconnect -> registers again on a new connection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../coord/coord_test_util.h"

#define EP "tcp://127.0.0.1:27240"

typedef struct router {
    void *ctx, *sock;
    bp_proto_in in;
    bp_msg msg;
    bp_proto_out out;
    unsigned char rid[256];
    size_t rid_len;
} router;

static int recv_msg(router *r, long ms)
{
    int64_t until = t_now_ms() + ms;
    for (;;) {
        long left = (long)(until - t_now_ms());
        if (left <= 0)
            return BP_ETIMEOUT;
        zmq_pollitem_t it = {r->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, left) <= 0)
            continue;
        if (bp_proto_recv(r->sock, 1, NULL, ZMQ_DONTWAIT, &r->in, NULL) != BP_OK)
            continue;
        memcpy(r->rid, r->in.envelope[0].data, r->in.envelope[0].size);
        r->rid_len = r->in.envelope[0].size;
        return bp_proto_decode(r->in.body, r->in.n_body, NULL, &r->msg, NULL);
    }
}

/* Receive until a message of type t (others, like heartbeats, skipped). */
static void expect(router *r, bp_msg_type t, long ms)
{
    int64_t until = t_now_ms() + ms;
    while (t_now_ms() < until) {
        if (recv_msg(r, (long)(until - t_now_ms())) == BP_OK && r->msg.type == t)
            return;
    }
    fail_msg("no %s within %ld ms", bp_msg_type_name(t), ms);
}

static void send_msg(router *r)
{
    bp_frame env = {r->rid, r->rid_len};
    assert_int_equal(bp_proto_send(r->sock, &env, 1, &r->out, NULL), BP_OK);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static int teardown(void **st)
{
    (void)st;
    kill_all_kids();
    return 0;
}

static void test_worker_protocol(void **st)
{
    (void)st;
    setenv("BITPLAN_TEST_KINDS", "1", 1);
    router r;
    memset(&r, 0, sizeof r);
    r.ctx = zmq_ctx_new();
    r.sock = zmq_socket(r.ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    zmq_setsockopt(r.sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(r.sock, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_bind(r.sock, EP), 0);
    bp_proto_out_init(&r.out, NULL);
    char dir[1024], log[1200];
    fresh_dir(dir, sizeof dir, "worker-rt");
    snprintf(log, sizeof log, "%s/worker.log", dir);
    pid_t w = spawn_bp(log, "worker", "--connect", EP, "--heartbeat-ms", "100", "--name",
                       "tw", (char *)NULL);
    assert_true(w > 0);

    expect(&r, BP_MSG_READY, 5000);
    assert_int_equal(r.msg.u.ready.worker.len, 2);
    assert_int_equal(r.msg.u.ready.pid, (uint64_t)w);
    bp_proto_encode_welcome(&r.out, 1, 100, 3, NULL);
    send_msg(&r);
    expect(&r, BP_MSG_HEARTBEAT, 2000);
    assert_false(r.msg.u.heartbeat.has_task);

    /* a task: heartbeats name it and the progress counter moves */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    pack_str(&pk, "i");
    msgpack_pack_uint64(&pk, 3);
    pack_str(&pk, "sleep_ms");
    msgpack_pack_uint64(&pk, 400);
    pack_str(&pk, "mode");
    pack_str(&pk, "ok");
    pack_str(&pk, "seed");
    msgpack_pack_uint64(&pk, 1);
    pack_str(&pk, "hash");
    pack_str(&pk, "blake2b256:abcd");
    bp_proto_encode_task(&r.out, 2, 77, bp_str_c("test_task"), sb.data, sb.size, 0, NULL, 0,
                         NULL);
    msgpack_sbuffer_destroy(&sb);
    send_msg(&r);
    uint64_t p1 = 0, p2 = 0;
    expect(&r, BP_MSG_HEARTBEAT, 2000);
    p1 = r.msg.u.heartbeat.progress;
    expect(&r, BP_MSG_HEARTBEAT, 2000);
    assert_true(r.msg.u.heartbeat.has_task);
    assert_int_equal(r.msg.u.heartbeat.task, 77);
    p2 = r.msg.u.heartbeat.progress;
    assert_true(p2 > p1);
    expect(&r, BP_MSG_TASK_RESULT, 5000);
    assert_int_equal(r.msg.u.task_result.task, 77);
    assert_int_equal(r.msg.u.task_result.hash.len, 15);
    assert_memory_equal(r.msg.u.task_result.hash.ptr, "blake2b256:abcd", 15);
    uint64_t i = 0;
    assert_int_equal(bp_mp_get_u64(r.msg.u.task_result.result, "i", &i, NULL), BP_OK);
    assert_int_equal(i, 3);
    assert_int_equal(r.msg.n_bin, 1);
    assert_int_equal(r.msg.bin[0].count, 4);

    /* unknown kind: task_failed, no crash */
    bp_proto_encode_task(&r.out, 3, 78, bp_str_c("no_such_kind"), NULL, 0, 0, NULL, 0, NULL);
    send_msg(&r);
    expect(&r, BP_MSG_TASK_FAILED, 3000);
    assert_int_equal(r.msg.u.task_failed.task, 78);
    assert_int_equal(bp_proto_bp_code(r.msg.u.task_failed.code), BP_EUNSUPPORTED);

    /* disconnect: the worker registers again on a new connection */
    unsigned char old[256];
    size_t old_len = r.rid_len;
    memcpy(old, r.rid, old_len);
    bp_proto_encode_disconnect(&r.out, 4, NULL);
    send_msg(&r);
    expect(&r, BP_MSG_READY, 5000);
    assert_false(r.rid_len == old_len && !memcmp(r.rid, old, old_len));

    /* SIGTERM: a clean `disconnect` and exit 0 */
    bp_proto_encode_welcome(&r.out, 5, 100, 3, NULL);
    send_msg(&r);
    expect(&r, BP_MSG_HEARTBEAT, 2000);
    kill(w, SIGTERM);
    expect(&r, BP_MSG_DISCONNECT, 3000);
    int status = 0;
    for (int k = 0; k < 300 && waitpid(w, &status, WNOHANG) != w; k++)
        t_sleep_ms(10);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    bp_msg_clear(&r.msg);
    bp_proto_in_clear(&r.in);
    bp_proto_out_clear(&r.out);
    zmq_close(r.sock);
    zmq_ctx_term(r.ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_worker_protocol, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
