/* bp_proto_recv's in->user_id: the ZAP User-Id of the sending connection.
 * A CURVE ROUTER/DEALER pair over tcp loopback (inproc has no security
 * handshake) with a ZAP responder run by the test itself, so the test picks
 * the User-Id; and a plain pair, which has none. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "bitplan/proto.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

typedef struct pair {
    void *ctx, *zap, *router, *dealer;
    const char *user_id; /* what the ZAP responder answers; NULL: no CURVE */
} pair;

static void set_str(void *s, int opt, const char *v)
{
    assert_int_equal(zmq_setsockopt(s, opt, v, strlen(v)), 0);
}

static void pair_open(pair *p, const char *user_id)
{
    memset(p, 0, sizeof *p);
    p->user_id = user_id;
    p->ctx = zmq_ctx_new();
    assert_non_null(p->ctx);
    p->router = zmq_socket(p->ctx, ZMQ_ROUTER);
    p->dealer = zmq_socket(p->ctx, ZMQ_DEALER);
    assert_int_equal(bp_proto_socket_limits(p->router, NULL, NULL), BP_OK);
    assert_int_equal(bp_proto_socket_limits(p->dealer, NULL, NULL), BP_OK);
    if (user_id) {
        assert_true(zmq_has("curve"));
        char spub[41], ssec[41], cpub[41], csec[41];
        assert_int_equal(zmq_curve_keypair(spub, ssec), 0);
        assert_int_equal(zmq_curve_keypair(cpub, csec), 0);
        /* the ZAP handler must exist before the CURVE socket is bound */
        p->zap = zmq_socket(p->ctx, ZMQ_REP);
        int zero = 0;
        assert_int_equal(zmq_setsockopt(p->zap, ZMQ_LINGER, &zero, sizeof zero), 0);
        assert_int_equal(zmq_bind(p->zap, ZAP_ENDPOINT), 0);
        int one = 1;
        assert_int_equal(zmq_setsockopt(p->router, ZMQ_CURVE_SERVER, &one, sizeof one), 0);
        set_str(p->router, ZMQ_CURVE_SECRETKEY, ssec);
        set_str(p->router, ZMQ_ZAP_DOMAIN, "test");
        set_str(p->dealer, ZMQ_CURVE_SERVERKEY, spub);
        set_str(p->dealer, ZMQ_CURVE_PUBLICKEY, cpub);
        set_str(p->dealer, ZMQ_CURVE_SECRETKEY, csec);
    }
    assert_int_equal(zmq_bind(p->router, "tcp://127.0.0.1:*"), 0);
    char ep[256];
    size_t n = sizeof ep;
    assert_int_equal(zmq_getsockopt(p->router, ZMQ_LAST_ENDPOINT, ep, &n), 0);
    assert_int_equal(zmq_connect(p->dealer, ep), 0);
}

static void pair_close(pair *p)
{
    zmq_close(p->dealer);
    zmq_close(p->router);
    if (p->zap)
        zmq_close(p->zap);
    zmq_ctx_term(p->ctx);
}

/* Answer one ZAP request (RFC 27) with 200 and p->user_id. */
static void answer_zap(pair *p)
{
    zmq_msg_t req[16];
    size_t n = 0;
    int more = 1;
    while (more && n < 16) {
        zmq_msg_init(&req[n]);
        assert_true(zmq_msg_recv(&req[n], p->zap, 0) >= 0);
        more = zmq_msg_more(&req[n]);
        n++;
    }
    assert_false(more);
    assert_true(n >= 2);
    assert_int_equal(zmq_send(p->zap, "1.0", 3, ZMQ_SNDMORE), 3);
    assert_true(zmq_send(p->zap, zmq_msg_data(&req[1]), zmq_msg_size(&req[1]), ZMQ_SNDMORE) >=
                0);
    assert_int_equal(zmq_send(p->zap, "200", 3, ZMQ_SNDMORE), 3);
    assert_int_equal(zmq_send(p->zap, "OK", 2, ZMQ_SNDMORE), 2);
    size_t ul = strlen(p->user_id);
    assert_int_equal(zmq_send(p->zap, p->user_id, ul, ZMQ_SNDMORE), (int)ul);
    assert_int_equal(zmq_send(p->zap, "", 0, 0), 0);
    for (size_t i = 0; i < n; i++)
        zmq_msg_close(&req[i]);
}

/* Send a heartbeat DEALER -> ROUTER and receive it, answering ZAP meanwhile.
 * Returns bp_proto_recv's status. */
static int send_and_recv(pair *p, bp_proto_in *in, bp_error *e)
{
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    assert_int_equal(bp_proto_encode_heartbeat(&out, 7, 1, NULL, NULL), BP_OK);
    assert_int_equal(bp_proto_send(p->dealer, NULL, 0, &out, NULL), BP_OK);
    bp_proto_out_clear(&out);
    for (int tries = 0; tries < 500; tries++) {
        zmq_pollitem_t it[2] = {{p->router, 0, ZMQ_POLLIN, 0}, {p->zap, 0, ZMQ_POLLIN, 0}};
        assert_true(zmq_poll(it, p->zap ? 2 : 1, 20) >= 0);
        if (p->zap && (it[1].revents & ZMQ_POLLIN))
            answer_zap(p);
        if (it[0].revents & ZMQ_POLLIN)
            return bp_proto_recv(p->router, 1, NULL, ZMQ_DONTWAIT, in, e);
    }
    fail_msg("no message arrived within 10 s");
    return BP_EIO;
}

static void expect_user_id(const char *zap_user_id, const char *want)
{
    pair p;
    pair_open(&p, zap_user_id);
    bp_proto_in in;
    bp_proto_in_init(&in);
    bp_error e;
    bp_error_clear(&e);
    int rc = send_and_recv(&p, &in, &e);
    if (rc)
        fprintf(stderr, "recv: %s\n", e.msg);
    assert_int_equal(rc, BP_OK);
    assert_string_equal(in.user_id, want);
    bp_msg m;
    bp_msg_init(&m);
    assert_int_equal(bp_proto_decode(in.body, in.n_body, NULL, &m, NULL), BP_OK);
    assert_int_equal(m.type, BP_MSG_HEARTBEAT);
    bp_msg_clear(&m);
    bp_proto_in_clear(&in);
    assert_string_equal(in.user_id, "");
    pair_close(&p);
}

static void test_curve_user_id_is_reported(void **state)
{
    (void)state;
    expect_user_id("alice", "alice");
}

static void test_no_curve_no_user_id(void **state)
{
    (void)state;
    expect_user_id(NULL, "");
}

static void test_longest_user_id_fits(void **state)
{
    (void)state;
    char uid[BP_PROTO_MAX_USER_ID + 1];
    memset(uid, 'k', BP_PROTO_MAX_USER_ID);
    uid[BP_PROTO_MAX_USER_ID] = '\0';
    expect_user_id(uid, uid);
}

/* An id that does not fit is a violation of that message, never a
 * truncated id that could equal another sender's. */
static void test_oversized_user_id_is_a_violation(void **state)
{
    (void)state;
    char uid[BP_PROTO_MAX_USER_ID + 2];
    memset(uid, 'k', BP_PROTO_MAX_USER_ID + 1);
    uid[BP_PROTO_MAX_USER_ID + 1] = '\0';
    pair p;
    pair_open(&p, uid);
    bp_proto_in in;
    bp_proto_in_init(&in);
    bp_error e;
    bp_error_clear(&e);
    assert_int_equal(send_and_recv(&p, &in, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "User-Id"));
    assert_string_equal(in.user_id, "");
    assert_int_equal(in.n_envelope, 1); /* still answerable */
    assert_int_equal(in.n_body, 0);
    /* drained: nothing of the message is left on the socket */
    assert_int_equal(bp_proto_recv(p.router, 1, NULL, ZMQ_DONTWAIT, &in, NULL), BP_ETIMEOUT);
    bp_proto_in_clear(&in);
    pair_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curve_user_id_is_reported),
        cmocka_unit_test(test_no_curve_no_user_id),
        cmocka_unit_test(test_longest_user_id_fits),
        cmocka_unit_test(test_oversized_user_id_is_a_violation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
