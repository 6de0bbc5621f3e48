/* Tests for proto/transport.c over real ZeroMQ sockets: inproc ROUTER/DEALER
 * for the send/receive helpers and frame caps, tcp loopback for
 * ZMQ_MAXMSGSIZE (which only stream transports enforce). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "bitplan/proto.h"

typedef struct fixture {
    void *ctx;
    void *router;
    void *dealer;
} fixture;

static int setup(void **state)
{
    static fixture f;
    static int n;
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://bp-proto-test-%d", n++);
    f.ctx = zmq_ctx_new();
    assert_non_null(f.ctx);
    f.router = zmq_socket(f.ctx, ZMQ_ROUTER);
    f.dealer = zmq_socket(f.ctx, ZMQ_DEALER);
    int one = 1;
    assert_int_equal(zmq_setsockopt(f.router, ZMQ_ROUTER_MANDATORY, &one, sizeof one), 0);
    assert_int_equal(bp_proto_socket_limits(f.router, NULL, NULL), BP_OK);
    assert_int_equal(bp_proto_socket_limits(f.dealer, NULL, NULL), BP_OK);
    assert_int_equal(zmq_bind(f.router, ep), 0);
    assert_int_equal(zmq_connect(f.dealer, ep), 0);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    zmq_close(f->dealer);
    zmq_close(f->router);
    zmq_ctx_term(f->ctx);
    return 0;
}

/* Wait up to ms for sock to be readable. */
static int readable(void *sock, long ms)
{
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    return zmq_poll(&it, 1, ms) == 1;
}

static void recv_decode(void *sock, size_t n_env, bp_proto_in *in, bp_msg *m)
{
    bp_error e;
    assert_true(readable(sock, 2000));
    int rc = bp_proto_recv(sock, n_env, NULL, ZMQ_DONTWAIT, in, &e);
    if (rc)
        fprintf(stderr, "recv: %s\n", e.msg);
    assert_int_equal(rc, BP_OK);
    rc = bp_proto_decode(in->body, in->n_body, NULL, m, &e);
    if (rc)
        fprintf(stderr, "decode: %s\n", e.msg);
    assert_int_equal(rc, BP_OK);
}

static void test_dealer_router_exchange(void **state)
{
    fixture *f = *state;
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    bp_proto_in in;
    bp_proto_in_init(&in);
    bp_msg m;
    bp_msg_init(&m);
    bp_error e;

    /* worker -> coordinator: ready */
    assert_int_equal(bp_proto_encode_ready(&out, 1, bp_str_c("w0"), 2, 4242, &e), BP_OK);
    assert_int_equal(bp_proto_send(f->dealer, NULL, 0, &out, &e), BP_OK);
    recv_decode(f->router, 1, &in, &m);
    assert_int_equal(in.n_envelope, 1);
    assert_int_equal(m.type, BP_MSG_READY);
    assert_int_equal(m.u.ready.pid, 4242);

    /* coordinator -> worker: task with a binary frame, addressed by the
     * routing id just received. */
    bp_frame env = in.envelope[0];
    uint8_t rid[BP_PROTO_MAX_ROUTING_ID];
    memcpy(rid, env.data, env.size);
    env.data = rid;
    float slice[1000];
    for (int i = 0; i < 1000; i++)
        slice[i] = (float)i * 0.5f;
    bp_bin_view b = {bp_str_c("slice"), BP_WIRE_F32, 1000, slice, sizeof slice};
    assert_int_equal(bp_proto_encode_task(&out, 2, 9, bp_str_c("hessian"), NULL, 0, 1000, &b, 1,
                                          &e), BP_OK);
    assert_int_equal(bp_proto_send(f->router, &env, 1, &out, &e), BP_OK);
    bp_proto_in in2;
    bp_proto_in_init(&in2);
    bp_msg m2;
    bp_msg_init(&m2);
    recv_decode(f->dealer, 0, &in2, &m2);
    assert_int_equal(m2.type, BP_MSG_TASK);
    assert_int_equal(m2.n_bin, 1);
    float back[1000];
    assert_int_equal(bp_proto_bin_copy(&m2.bin[0], BP_WIRE_F32, back, sizeof back, &e), BP_OK);
    assert_memory_equal(back, slice, sizeof slice);

    /* Unknown routing id with ROUTER_MANDATORY: EHOSTUNREACH, not a hang. */
    bp_frame ghost = {"\x00ghost", 6};
    assert_int_equal(bp_proto_send(f->router, &ghost, 1, &out, &e), BP_ENOTFOUND);
    assert_non_null(strstr(e.msg, "unreachable"));

    /* Nothing queued: recv with DONTWAIT says so instead of blocking. */
    assert_int_equal(bp_proto_recv(f->dealer, 0, NULL, ZMQ_DONTWAIT, &in2, &e), BP_ETIMEOUT);

    /* Bad arguments. */
    bp_proto_out empty;
    bp_proto_out_init(&empty, NULL);
    assert_int_equal(bp_proto_send(f->dealer, NULL, 0, &empty, &e), BP_EINVAL);
    assert_int_equal(bp_proto_send(f->dealer, &env, BP_PROTO_MAX_ENVELOPE + 1, &out, &e),
                     BP_EINVAL);
    assert_int_equal(bp_proto_recv(f->dealer, BP_PROTO_MAX_ENVELOPE + 1, NULL, 0, &in2, &e),
                     BP_EINVAL);
    bp_proto_out_clear(&empty);

    bp_msg_clear(&m2);
    bp_proto_in_clear(&in2);
    bp_msg_clear(&m);
    bp_proto_in_clear(&in);
    bp_proto_in_clear(&in); /* twice is safe */
    bp_proto_out_clear(&out);
}

/* Raw multipart send, for messages the encoder would never produce. */
static void send_raw(void *sock, size_t n, size_t frame_size)
{
    static uint8_t zeros[4096];
    assert_true(frame_size <= sizeof zeros);
    for (size_t i = 0; i < n; i++)
        assert_true(zmq_send(sock, zeros, frame_size, i + 1 < n ? ZMQ_SNDMORE : 0) >= 0);
}

static void test_extra_frames_drained_and_rejected(void **state)
{
    fixture *f = *state;
    bp_proto_in in;
    bp_proto_in_init(&in);
    bp_error e;
    bp_proto_limits lim;
    bp_proto_limits_default(&lim);
    lim.max_bin_frames = 2;

    /* 1 header + 40 frames: far past the cap of 1 + 2. */
    send_raw(f->dealer, 41, 8);
    assert_true(readable(f->router, 2000));
    assert_int_equal(bp_proto_recv(f->router, 1, &lim, ZMQ_DONTWAIT, &in, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "42 frames, at most 4 allowed: too many frames"));
    assert_int_equal(in.n_envelope, 1); /* caller can still answer the peer */
    assert_int_equal(in.n_body, 0);

    /* The rest was drained: the next message arrives intact. */
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    assert_int_equal(bp_proto_encode_heartbeat(&out, 5, 17, NULL, &e), BP_OK);
    assert_int_equal(bp_proto_send(f->dealer, NULL, 0, &out, &e), BP_OK);
    bp_msg m;
    bp_msg_init(&m);
    assert_true(readable(f->router, 2000));
    assert_int_equal(bp_proto_recv(f->router, 1, &lim, ZMQ_DONTWAIT, &in, &e), BP_OK);
    assert_int_equal(bp_proto_decode(in.body, in.n_body, &lim, &m, &e), BP_OK);
    assert_int_equal(m.type, BP_MSG_HEARTBEAT);
    assert_int_equal(m.u.heartbeat.progress, 17);

    /* Frame count within the socket cap but not matching the header: the
     * decoder rejects it. */
    send_raw(f->dealer, 1, 0);
    assert_true(readable(f->router, 2000));
    assert_int_equal(bp_proto_recv(f->router, 1, &lim, ZMQ_DONTWAIT, &in, &e), BP_OK);
    assert_int_equal(in.n_body, 1);
    assert_int_equal(bp_proto_decode(in.body, in.n_body, &lim, &m, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "empty"));

    /* A frame over the size limit is refused by the helper on any transport
     * (inproc does not apply ZMQ_MAXMSGSIZE). */
    lim.max_frame_bytes = 1024;
    send_raw(f->dealer, 2, 2048);
    assert_true(readable(f->router, 2000));
    assert_int_equal(bp_proto_recv(f->router, 1, &lim, ZMQ_DONTWAIT, &in, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "frame 1 of 2048 bytes exceeds the limit 1024"));
    lim.max_header_bytes = 16;
    send_raw(f->dealer, 1, 17);
    assert_true(readable(f->router, 2000));
    assert_int_equal(bp_proto_recv(f->router, 1, &lim, ZMQ_DONTWAIT, &in, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "frame 0 of 17 bytes exceeds the limit 16"));

    bp_msg_clear(&m);
    bp_proto_in_clear(&in);
    bp_proto_out_clear(&out);
}

/* ZMQ_MAXMSGSIZE on the receiving socket: over tcp, a peer sending a frame
 * above the limit is disconnected and the message never surfaces. */
static void test_maxmsgsize_over_tcp(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    bp_proto_limits lim;
    bp_proto_limits_default(&lim);
    lim.max_header_bytes = 1024;
    lim.max_frame_bytes = 1024;
    bp_error e;
    assert_int_equal(bp_proto_socket_limits(router, &lim, &e), BP_OK);
    int64_t got = 0;
    size_t sz = sizeof got;
    assert_int_equal(zmq_getsockopt(router, ZMQ_MAXMSGSIZE, &got, &sz), 0);
    assert_int_equal(got, 1024);
    if (zmq_bind(router, "tcp://127.0.0.1:*") != 0) {
        zmq_close(router);
        zmq_ctx_term(ctx);
        skip();
    }
    char ep[256];
    size_t eplen = sizeof ep;
    assert_int_equal(zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, ep, &eplen), 0);

    void *big = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(big, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(big, ep), 0);
    static uint8_t payload[4096];
    assert_true(zmq_send(big, payload, sizeof payload, 0) >= 0);
    assert_false(readable(router, 500)); /* dropped, peer disconnected */

    /* A well-behaved peer is still served. */
    void *good = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(good, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(good, ep), 0);
    bp_proto_out out;
    bp_proto_out_init(&out, &lim);
    assert_int_equal(bp_proto_encode_jobs(&out, 3, &e), BP_OK);
    /* DONTWAIT may see EAGAIN until the tcp connection is up. */
    int rc = BP_ETIMEOUT;
    for (int i = 0; i < 200 && rc == BP_ETIMEOUT; i++) {
        rc = bp_proto_send(good, NULL, 0, &out, &e);
        if (rc == BP_ETIMEOUT)
            zmq_poll(NULL, 0, 10);
    }
    assert_int_equal(rc, BP_OK);
    bp_proto_in in;
    bp_proto_in_init(&in);
    bp_msg m;
    bp_msg_init(&m);
    assert_true(readable(router, 5000));
    assert_int_equal(bp_proto_recv(router, 1, &lim, ZMQ_DONTWAIT, &in, &e), BP_OK);
    assert_int_equal(bp_proto_decode(in.body, in.n_body, &lim, &m, &e), BP_OK);
    assert_int_equal(m.type, BP_MSG_JOBS);
    assert_int_equal(m.id, 3);

    bp_msg_clear(&m);
    bp_proto_in_clear(&in);
    bp_proto_out_clear(&out);
    zmq_close(good);
    zmq_close(big);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* A DEALER with no completed connection and ZMQ_IMMEDIATE: send must not
 * block, it reports BP_ETIMEOUT. */
static void test_send_never_blocks(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    void *d = zmq_socket(ctx, ZMQ_DEALER);
    int one = 1, zero = 0;
    zmq_setsockopt(d, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    /* inproc creates its pipe at connect time even before the bind, so use
     * a tcp port where nobody listens: ZMQ_IMMEDIATE then queues nothing. */
    assert_int_equal(zmq_connect(d, "tcp://127.0.0.1:1"), 0);
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    bp_error e;
    assert_int_equal(bp_proto_encode_disconnect(&out, 1, &e), BP_OK);
    assert_int_equal(bp_proto_send(d, NULL, 0, &out, &e), BP_ETIMEOUT);
    assert_non_null(strstr(e.msg, "would block"));
    bp_proto_out_clear(&out);
    zmq_close(d);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dealer_router_exchange, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extra_frames_drained_and_rejected, setup, teardown),
        cmocka_unit_test(test_maxmsgsize_over_tcp),
        cmocka_unit_test(test_send_never_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
