/* Tests for proto/codec.c: round trips of every message type, encoder
 * self-checks, and a table of hostile messages with their expected outcome. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/proto.h"
#include "proto_test_util.h"

/* ---- Round trips ------------------------------------------------------ */

/* Decode what out holds; the message stays valid until the next call. */
static bp_msg g_msg;

static const bp_msg *decode_out(const bp_proto_out *out)
{
    bp_frame frames[1 + BP_PROTO_MAX_BIN];
    size_t n = bp_proto_out_frames(out, frames, 1 + BP_PROTO_MAX_BIN);
    assert_true(n >= 1);
    bp_error e;
    bp_error_clear(&e);
    int rc = bp_proto_decode(frames, n, NULL, &g_msg, &e);
    if (rc)
        fprintf(stderr, "decode failed: %s\n", e.msg);
    assert_int_equal(rc, BP_OK);
    return &g_msg;
}

static void assert_str(bp_str s, const char *want)
{
    assert_non_null(s.ptr);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.ptr, want, s.len);
}

static int teardown_msg(void **state)
{
    (void)state;
    bp_msg_clear(&g_msg);
    return 0;
}

static void test_roundtrip_client_messages(void **state)
{
    (void)state;
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    bp_error e;
    const char *spec = "{\"model\": \"m\", \"budget\": {\"bpw\": 4.5}}";

    assert_int_equal(bp_proto_encode_submit(&out, 1, bp_str_c(spec), &e), BP_OK);
    const bp_msg *m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_SUBMIT);
    assert_int_equal(m->id, 1);
    assert_int_equal(m->version, 1);
    assert_str(m->u.submit.job, spec);

    assert_int_equal(bp_proto_encode_status(&out, 2, bp_str_c("job-1"), &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_STATUS);
    assert_str(m->u.status.job, "job-1");

    assert_int_equal(bp_proto_encode_result(&out, 3, bp_str_c("job-1"), &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_RESULT);
    assert_str(m->u.result.job, "job-1");

    assert_int_equal(bp_proto_encode_cancel(&out, UINT64_MAX, bp_str_c("job-2"), &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_CANCEL);
    assert_true(m->id == UINT64_MAX);
    assert_str(m->u.cancel.job, "job-2");

    assert_int_equal(bp_proto_encode_jobs(&out, 5, &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_JOBS);
    assert_int_equal(m->id, 5);
    assert_int_equal(m->n_bin, 0);
    bp_proto_out_clear(&out);
}

static void test_roundtrip_coordinator_replies(void **state)
{
    (void)state;
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    bp_error e;

    assert_int_equal(bp_proto_encode_submitted(&out, 1, bp_str_c("job-9"), &e), BP_OK);
    const bp_msg *m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_SUBMITTED);
    assert_str(m->u.submitted.job, "job-9");

    bp_msg_status_reply st = {.job = bp_str_c("job-9"), .state = bp_str_c("running"),
                              .done = 3, .total = 10, .progress = 0.3,
                              .has_eta = true, .eta_s = 12.5};
    assert_int_equal(bp_proto_encode_status_reply(&out, 2, &st, &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_STATUS_REPLY);
    assert_str(m->u.status_reply.job, "job-9");
    assert_str(m->u.status_reply.state, "running");
    assert_int_equal(m->u.status_reply.done, 3);
    assert_int_equal(m->u.status_reply.total, 10);
    assert_true(m->u.status_reply.progress == 0.3);
    assert_true(m->u.status_reply.has_eta);
    assert_true(m->u.status_reply.eta_s == 12.5);
    assert_false(m->u.status_reply.has_error_code);
    assert_null(m->u.status_reply.error.ptr);

    bp_msg_status_reply failed = {.job = bp_str_c("job-8"), .state = bp_str_c("failed"),
                                  .done = 1, .total = 1, .progress = 1.0,
                                  .has_error_code = true,
                                  .error_code = bp_proto_wire_code(BP_EINFEASIBLE),
                                  .error = bp_str_c("budget below the smallest plan")};
    assert_int_equal(bp_proto_encode_status_reply(&out, 3, &failed, &e), BP_OK);
    m = decode_out(&out);
    assert_false(m->u.status_reply.has_eta);
    assert_true(m->u.status_reply.has_error_code);
    assert_int_equal(bp_proto_bp_code(m->u.status_reply.error_code), BP_EINFEASIBLE);
    assert_str(m->u.status_reply.error, "budget below the smallest plan");

    assert_int_equal(bp_proto_encode_result_reply(&out, 4, bp_str_c("job-9"),
                                                  bp_str_c("{\"plan\":[]}"), &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_RESULT_REPLY);
    assert_str(m->u.result_reply.plan, "{\"plan\":[]}");

    bp_proto_job_entry jobs[3] = {
        {bp_str_c("a"), bp_str_c("queued"), 0, 5},
        {bp_str_c("b"), bp_str_c("running"), 2, 5},
        {bp_str_c("c"), bp_str_c("done"), 5, 5},
    };
    assert_int_equal(bp_proto_encode_jobs_reply(&out, 5, jobs, 3, &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_JOBS_REPLY);
    assert_int_equal(m->u.jobs_reply.n_jobs, 3);
    assert_str(m->u.jobs_reply.jobs[1].job, "b");
    assert_str(m->u.jobs_reply.jobs[1].state, "running");
    assert_int_equal(m->u.jobs_reply.jobs[2].done, 5);
    assert_int_equal(bp_proto_encode_jobs_reply(&out, 6, NULL, 0, &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->u.jobs_reply.n_jobs, 0);

    assert_int_equal(bp_proto_encode_ok(&out, 7, &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_OK);

    assert_int_equal(bp_proto_encode_error(&out, 8, bp_proto_wire_code(BP_ENOTFOUND),
                                           bp_str_c("no job 'x'"), &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_ERROR);
    assert_int_equal(m->u.error.code, 9);
    assert_str(m->u.error.message, "no job 'x'");
    bp_proto_out_clear(&out);
}

/* {"bits": [2, 3, 4], "layer": "blk.0.attn_q", "scale": 0.5, "exact": true} */
static void pack_params(msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "bits", 4);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_int(&pk, 2);
    msgpack_pack_int(&pk, 3);
    msgpack_pack_int(&pk, 4);
    msgpack_pack_str_with_body(&pk, "layer", 5);
    msgpack_pack_str_with_body(&pk, "blk.0.attn_q", 12);
    msgpack_pack_str_with_body(&pk, "scale", 5);
    msgpack_pack_float(&pk, 0.5f);
    msgpack_pack_str_with_body(&pk, "exact", 5);
    msgpack_pack_true(&pk);
}

static void test_roundtrip_worker_messages(void **state)
{
    (void)state;
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    bp_error e;

    assert_int_equal(bp_proto_encode_ready(&out, 1, bp_str_c("host-a/123"), 8, 123, &e), BP_OK);
    const bp_msg *m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_READY);
    assert_str(m->u.ready.worker, "host-a/123");
    assert_int_equal(m->u.ready.threads, 8);
    assert_int_equal(m->u.ready.pid, 123);

    uint64_t task = 77;
    assert_int_equal(bp_proto_encode_heartbeat(&out, 2, 1000, &task, &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_HEARTBEAT);
    assert_int_equal(m->u.heartbeat.progress, 1000);
    assert_true(m->u.heartbeat.has_task);
    assert_int_equal(m->u.heartbeat.task, 77);
    assert_int_equal(bp_proto_encode_heartbeat(&out, 3, 0, NULL, &e), BP_OK);
    m = decode_out(&out);
    assert_false(m->u.heartbeat.has_task);

    /* task_result with a result map and two binary frames. */
    msgpack_sbuffer res;
    pack_params(&res);
    float err_rows[5] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
    double hdiag[3] = {1.0, 2.0, 3.0};
    bp_bin_view bins[2] = {
        {bp_str_c("row_err"), BP_WIRE_F32, 5, err_rows, sizeof err_rows},
        {bp_str_c("hdiag"), BP_WIRE_F64, 3, hdiag, sizeof hdiag},
    };
    const char *hash = "blake2b256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_int_equal(bp_proto_encode_task_result(&out, 4, 77, bp_str_c(hash), res.data,
                                                 res.size, bins, 2, &e), BP_OK);
    assert_int_equal(out.n_bin, 2);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_TASK_RESULT);
    assert_int_equal(m->u.task_result.task, 77);
    assert_str(m->u.task_result.hash, hash);
    assert_non_null(m->u.task_result.result);
    assert_int_equal(m->n_bin, 2);
    const bp_bin_view *rv = bp_msg_find_bin(m, "row_err");
    assert_non_null(rv);
    assert_int_equal(rv->dtype, BP_WIRE_F32);
    assert_int_equal(rv->count, 5);
    float back[5];
    assert_int_equal(bp_proto_bin_copy(rv, BP_WIRE_F32, back, sizeof back, &e), BP_OK);
    assert_memory_equal(back, err_rows, sizeof back);
    assert_int_equal(bp_proto_bin_copy(rv, BP_WIRE_F64, back, sizeof back, &e), BP_EMISMATCH);
    assert_int_equal(bp_proto_bin_copy(rv, BP_WIRE_F32, back, 8, &e), BP_EMISMATCH);
    const bp_bin_view *hv = bp_msg_find_bin(m, "hdiag");
    assert_non_null(hv);
    double hback[3];
    assert_int_equal(bp_proto_bin_copy(hv, BP_WIRE_F64, hback, sizeof hback, &e), BP_OK);
    assert_true(hback[2] == 3.0);
    assert_null(bp_msg_find_bin(m, "nope"));

    /* Accessors on the opaque result map. */
    const msgpack_object *r = m->u.task_result.result;
    bp_str layer;
    assert_int_equal(bp_mp_get_str(r, "layer", &layer, &e), BP_OK);
    assert_str(layer, "blk.0.attn_q");
    double scale;
    assert_int_equal(bp_mp_get_f64(r, "scale", &scale, &e), BP_OK);
    assert_true(scale == 0.5);
    bool exact;
    assert_int_equal(bp_mp_get_bool(r, "exact", &exact, &e), BP_OK);
    assert_true(exact);
    const msgpack_object *items;
    size_t n_items;
    assert_int_equal(bp_mp_get_array(r, "bits", &items, &n_items, &e), BP_OK);
    assert_int_equal(n_items, 3);
    assert_int_equal(items[2].via.u64, 4);
    uint64_t u;
    assert_int_equal(bp_mp_get_u64(r, "missing", &u, &e), BP_ENOTFOUND);
    assert_int_equal(bp_mp_get_u64(r, "layer", &u, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "'layer': expected an unsigned integer, got string"));
    assert_non_null(bp_mp_get(r, "bits"));
    assert_null(bp_mp_get(r, "nope"));
    msgpack_sbuffer_destroy(&res);

    assert_int_equal(bp_proto_encode_task_failed(&out, 5, 77, bp_proto_wire_code(BP_ESOLVER),
                                                 bp_str_c("glpk: no primal solution"), &e),
                     BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_TASK_FAILED);
    assert_int_equal(bp_proto_bp_code(m->u.task_failed.code), BP_ESOLVER);
    assert_str(m->u.task_failed.message, "glpk: no primal solution");

    assert_int_equal(bp_proto_encode_disconnect(&out, 6, &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_DISCONNECT);
    bp_proto_out_clear(&out);
}

static void test_roundtrip_coordinator_to_worker(void **state)
{
    (void)state;
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    bp_error e;

    assert_int_equal(bp_proto_encode_welcome(&out, 1, 1000, 3, &e), BP_OK);
    const bp_msg *m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_WELCOME);
    assert_int_equal(m->u.welcome.heartbeat_ms, 1000);
    assert_int_equal(m->u.welcome.liveness, 3);

    msgpack_sbuffer params;
    pack_params(&params);
    uint16_t codes[4] = {1, 2, 3, 65535};
    uint8_t mask[3] = {0, 1, 255};
    int64_t offs[2] = {-5, INT64_MAX};
    bp_bin_view bins[4] = {
        {bp_str_c("codes"), BP_WIRE_U16, 4, codes, sizeof codes},
        {bp_str_c("mask"), BP_WIRE_U8, 3, mask, sizeof mask},
        {bp_str_c("offsets"), BP_WIRE_I64, 2, offs, sizeof offs},
        {bp_str_c("empty.slice-0"), BP_WIRE_F32, 0, NULL, 0},
    };
    assert_int_equal(bp_proto_encode_task(&out, 2, 1234, bp_str_c("sweep"), params.data,
                                          params.size, 60000, bins, 4, &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->type, BP_MSG_TASK);
    assert_int_equal(m->u.task.task, 1234);
    assert_str(m->u.task.kind, "sweep");
    assert_int_equal(m->u.task.deadline_ms, 60000);
    assert_int_equal(m->n_bin, 4);
    uint16_t cback[4];
    assert_int_equal(bp_proto_bin_copy(bp_msg_find_bin(m, "codes"), BP_WIRE_U16, cback,
                                       sizeof cback, &e), BP_OK);
    assert_memory_equal(cback, codes, sizeof codes);
    int64_t oback[2];
    assert_int_equal(bp_proto_bin_copy(bp_msg_find_bin(m, "offsets"), BP_WIRE_I64, oback,
                                       sizeof oback, &e), BP_OK);
    assert_true(oback[1] == INT64_MAX);
    assert_int_equal(bp_msg_find_bin(m, "empty.slice-0")->size, 0);
    int64_t i64;
    assert_int_equal(bp_mp_get_i64(m->u.task.params, "bits", &i64, &e), BP_EPROTO);

    /* Re-encode the decoded message with the generic encoder (relay path):
     * params are packed from the msgpack_object. */
    bp_msg copy = *m;
    bp_proto_out out2;
    bp_proto_out_init(&out2, NULL);
    assert_int_equal(bp_proto_encode(&out2, &copy, &e), BP_OK);
    assert_int_equal(out2.header.size, out.header.size);
    assert_memory_equal(out2.header.data, out.header.data, out.header.size);
    bp_proto_out_clear(&out2);

    /* Empty params. */
    assert_int_equal(bp_proto_encode_task(&out, 3, 1, bp_str_c("noop"), NULL, 0, 0, NULL, 0,
                                          &e), BP_OK);
    m = decode_out(&out);
    assert_int_equal(m->u.task.params->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(m->u.task.params->via.map.size, 0);
    msgpack_sbuffer_destroy(&params);
    bp_proto_out_clear(&out);
}

/* ---- Encoder refusals ------------------------------------------------- */

static void test_encoder_refuses_out_of_schema(void **state)
{
    (void)state;
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    bp_error e;

    bp_msg_status_reply st = {.job = bp_str_c("j"), .state = bp_str_c("running"), .done = 1,
                              .total = 2, .progress = NAN};
    assert_int_equal(bp_proto_encode_status_reply(&out, 1, &st, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "encode status_reply"));
    assert_non_null(strstr(e.msg, "not finite"));
    assert_int_equal(out.header.size, 0);
    bp_frame f[2];
    assert_int_equal(bp_proto_out_frames(&out, f, 2), 0);

    st.progress = 0.5;
    st.done = 3;
    assert_int_equal(bp_proto_encode_status_reply(&out, 1, &st, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "exceeds total"));

    char name[300];
    memset(name, 'w', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    assert_int_equal(bp_proto_encode_ready(&out, 1, bp_str_c(name), 1, 1, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "exceeds 256"));
    assert_int_equal(bp_proto_encode_ready(&out, 1, bp_str_c("w"), 0, 1, &e), BP_EINVAL);
    assert_int_equal(bp_proto_encode_status(&out, 1, bp_str_c(NULL), &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "required, got nil"));
    bp_str bad = {NULL, 4};
    assert_int_equal(bp_proto_encode_status(&out, 1, bad, &e), BP_EINVAL);
    assert_int_equal(bp_proto_encode_error(&out, 1, 0, bp_str_c("x"), &e), BP_EINVAL);
    assert_int_equal(bp_proto_encode_task(&out, 1, 1, bp_str_c("Sweep!"), NULL, 0, 0, NULL, 0,
                                          &e), BP_EINVAL);

    /* Pre-encoded params must be exactly one map. */
    const uint8_t not_map[] = {0x91, 0x01};
    assert_int_equal(bp_proto_encode_task(&out, 1, 1, bp_str_c("sweep"), not_map,
                                          sizeof not_map, 0, NULL, 0, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "not a map"));
    const uint8_t two[] = {0x80, 0xa1, 'x', 0x01};
    assert_int_equal(bp_proto_encode_task(&out, 1, 1, bp_str_c("sweep"), two, sizeof two, 0,
                                          NULL, 0, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "trailing"));
    const uint8_t half[] = {0x81, 0xa1, 'x'};
    assert_int_equal(bp_proto_encode_task(&out, 1, 1, bp_str_c("sweep"), half, sizeof half, 0,
                                          NULL, 0, &e), BP_EINVAL);

    /* Binary frames: wrong size, non-finite data, too many, wrong type. */
    float v[2] = {1.0f, NAN};
    bp_bin_view b = {bp_str_c("x"), BP_WIRE_F32, 2, v, 7};
    assert_int_equal(bp_proto_encode_task(&out, 1, 1, bp_str_c("sweep"), NULL, 0, 0, &b, 1,
                                          &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "frame size 7"));
    b.size = sizeof v;
    assert_int_equal(bp_proto_encode_task(&out, 1, 1, bp_str_c("sweep"), NULL, 0, 0, &b, 1,
                                          &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "non-finite"));
    bp_bin_view many[BP_PROTO_MAX_BIN + 1];
    memset(many, 0, sizeof many);
    assert_int_equal(bp_proto_encode_task(&out, 1, 1, bp_str_c("sweep"), NULL, 0, 0, many,
                                          BP_PROTO_MAX_BIN + 1, &e), BP_EINVAL);
    bp_msg m;
    memset(&m, 0, sizeof m);
    m.type = BP_MSG_OK;
    m.n_bin = 1;
    m.bin[0] = b;
    assert_int_equal(bp_proto_encode(&out, &m, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "carries no binary frames"));
    m.type = (bp_msg_type)99;
    assert_int_equal(bp_proto_encode(&out, &m, &e), BP_EINVAL);
    assert_int_equal(bp_proto_encode(NULL, &m, &e), BP_EINVAL);
    bp_proto_out_clear(&out);
}

/* ---- Hostile messages ------------------------------------------------- */

enum { LIM_DEFAULT, LIM_SMALL, LIM_WORKER_PEER };

typedef struct hcase {
    const char *notation;   /* frame 0 */
    size_t n_extra;         /* binary frames after the header */
    size_t extra_size[3];   /* bytes of each */
    uint8_t fill;           /* byte value filling them (0xff = NaN floats) */
    int limits;
    int code;
    const char *substr;     /* expected in the error message */
} hcase;

#define OKT "v:1,t:'task',id:1,task:1,kind:'sweep',deadline_ms:0"
#define BIN1(dt, c) "bin:[{name:'x',dtype:'" dt "',count:" #c "}]"

static const hcase hostile[] = {
    /* Byte-level attacks on the msgpack layer. */
    {"#83 a1 76 01 a1 74 a2 6f 6b a2 69 64", 0, {0}, 0, 0, BP_EPROTO, "truncated at byte 12"},
    {"#dd ff ff ff ff", 0, {0}, 0, 0, BP_EPROTO, "declares 4294967295 objects"},
    {"#df ff ff ff ff", 0, {0}, 0, 0, BP_EPROTO, "declares 8589934590 objects"},
    {"#c6 00 01 00 00", 0, {0}, 0, 0, BP_EPROTO, "declares 65536 bytes but 0 remain"},
    {"#db 7f ff ff ff 61", 0, {0}, 0, 0, BP_EPROTO, "declares 2147483647 bytes"},
    {"#dc ff ff c0", 0, {0}, 0, 0, BP_EPROTO, "declares 65535 objects"},
    {"#91*33 01", 0, {0}, 0, 0, BP_EPROTO, "nesting deeper than 8"},
    {"#91*9 01", 0, {0}, 0, 0, BP_EPROTO, "nesting deeper than 8"},
    {"{" OKT ",params:{a:[[[[[[[1]]]]]]]}}", 0, {0}, 0, 0, BP_EPROTO, "nesting deeper than 8"},
    {"#", 0, {0}, 0, 0, BP_EPROTO, "frame: empty"},
    {"#c1", 0, {0}, 0, 0, BP_EPROTO, "reserved type 0xc1"},
    {"#d4 01 00", 0, {0}, 0, 0, BP_EPROTO, "ext type"},
    {"{v:1,t:'ok',id:1} ## c0", 0, {0}, 0, 0, BP_EPROTO, "1 trailing bytes"},
    {"[1, 2]", 0, {0}, 0, 0, BP_EPROTO, "header is not a map (got array)"},
    {"'hello'", 0, {0}, 0, 0, BP_EPROTO, "header is not a map (got string)"},
    /* Version and envelope fields. */
    {"{v:2,t:'ok',id:1}", 0, {0}, 0, 0, BP_EPROTO, "unsupported protocol version 2"},
    {"{v:-1,t:'ok',id:1}", 0, {0}, 0, 0, BP_EPROTO, "unsupported protocol version -1"},
    {"{v:'1',t:'ok',id:1}", 0, {0}, 0, 0, BP_EPROTO, "field 'v': expected an integer"},
    {"{t:'ok',id:1}", 0, {0}, 0, 0, BP_EPROTO, "missing required field 'v'"},
    {"{v:1,id:1}", 0, {0}, 0, 0, BP_EPROTO, "missing required field 't'"},
    {"{v:1,t:7,id:1}", 0, {0}, 0, 0, BP_EPROTO, "field 't': expected a string"},
    {"{v:1,t:'frobnicate',id:1}", 0, {0}, 0, 0, BP_EPROTO, "unknown message type 'frobnicate'"},
    {"{v:1,t:'ok\\x01',id:1}", 0, {0}, 0, 0, BP_EPROTO, "unknown message type 'ok\\x01'"},
    {"{v:1,t:'ok',id:-1}", 0, {0}, 0, 0, BP_EPROTO,
     "field 'id': expected an unsigned integer, got negative integer"},
    {"{v:1,t:'ok',id:'7'}", 0, {0}, 0, 0, BP_EPROTO, "field 'id': expected an unsigned integer, got string"},
    {"{v:1,t:'ok',id:1.5}", 0, {0}, 0, 0, BP_EPROTO, "got float64"},
    {"{v:1,t:'ok'}", 0, {0}, 0, 0, BP_EPROTO, "missing required field 'id'"},
    {"{v:1,t:'ok',id:1,id:2}", 0, {0}, 0, 0, BP_EPROTO, "duplicate field 'id'"},
    {"{v:1,v:1,t:'ok',id:1}", 0, {0}, 0, 0, BP_EPROTO, "duplicate field 'v'"},
    {"{v:1,t:'ok',id:1,extra:1}", 0, {0}, 0, 0, BP_EPROTO, "ok: unknown field 'extra'"},
    {"{v:1,t:'ok',id:1,5:1}", 0, {0}, 0, 0, BP_EPROTO, "map key of type unsigned integer"},
    {"{v:1,t:'status',id:1,job:'j',bin:[]}", 0, {0}, 0, 0, BP_EPROTO, "unknown field 'bin'"},
    /* Field types, presence, ranges. */
    {"{v:1,t:'status',id:1,job:5}", 0, {0}, 0, 0, BP_EPROTO, "field 'job': expected a string, got unsigned integer"},
    {"{v:1,t:'status',id:1}", 0, {0}, 0, 0, BP_EPROTO, "status: missing required field 'job'"},
    {"{v:1,t:'status',id:1,job:nil}", 0, {0}, 0, 0, BP_EPROTO, "field 'job': required, got nil"},
    {"{v:1,t:'status',id:1,job:''}", 0, {0}, 0, 0, BP_EPROTO, "field 'job': empty string"},
    {"{v:1,t:'welcome',id:1,heartbeat_ms:'x',liveness:3}", 0, {0}, 0, 0, BP_EPROTO,
     "field 'heartbeat_ms': expected an unsigned integer, got string"},
    {"{v:1,t:'welcome',id:1,heartbeat_ms:0,liveness:3}", 0, {0}, 0, 0, BP_EPROTO,
     "field 'heartbeat_ms': 0 is outside [1, 3600000]"},
    {"{v:1,t:'ready',id:1,worker:'w',threads:4}", 0, {0}, 0, 0, BP_EPROTO, "missing required field 'pid'"},
    {"{v:1,t:'ready',id:1,worker:S(257),threads:4,pid:9}", 0, {0}, 0, 0, BP_EPROTO,
     "field 'worker': string of 257 bytes exceeds 256"},
    {"{v:1,t:'submit',id:1,job:S(1048577)}", 0, {0}, 0, 0, BP_EPROTO,
     "field 'job': string of 1048577 bytes exceeds 1048576"},
    {"{v:1,t:'error',id:1,code:1,message:S(4097)}", 0, {0}, 0, 0, BP_EPROTO, "exceeds 4096"},
    {"{v:1,t:'error',id:1,code:0,message:'x'}", 0, {0}, 0, 0, BP_EPROTO, "0 means success"},
    {"{v:1,t:'error',id:1,code:2147483648,message:'x'}", 0, {0}, 0, 0, BP_EPROTO, "int32 range"},
    {"{v:1,t:'error',id:1,code:1.0,message:'x'}", 0, {0}, 0, 0, BP_EPROTO, "expected an integer, got float64"},
    {"{v:1,t:'status_reply',id:1,job:'j',state:'running',done:1,total:2,progress:nan}", 0, {0},
     0, 0, BP_EPROTO, "field 'progress': float is not finite"},
    {"{v:1,t:'status_reply',id:1,job:'j',state:'running',done:1,total:2,progress:0.5,eta_s:inf}",
     0, {0}, 0, 0, BP_EPROTO, "field 'eta_s': float is not finite"},
    {"{v:1,t:'status_reply',id:1,job:'j',state:'running',done:1,total:2,progress:1.5}", 0,
     {0}, 0, 0, BP_EPROTO, "field 'progress': 1.5 is outside [0, 1]"},
    {"{v:1,t:'status_reply',id:1,job:'j',state:'running',done:3,total:2,progress:1.0}", 0,
     {0}, 0, 0, BP_EPROTO, "done 3 exceeds total 2"},
    {"{v:1,t:'status_reply',id:1,job:'j',state:'Running!',done:1,total:2,progress:0.5}", 0,
     {0}, 0, 0, BP_EPROTO, "'Running!' is not an identifier"},
    {"{v:1,t:'status_reply',id:1,job:'j',state:'running',done:1,total:2,progress:'half'}", 0,
     {0}, 0, 0, BP_EPROTO, "field 'progress': expected a number, got string"},
    {"{v:1,t:'heartbeat',id:1,progress:5,task:-3}", 0, {0}, 0, 0, BP_EPROTO,
     "field 'task': expected an unsigned integer, got negative integer"},
    /* Strings: UTF-8 policy. */
    {"{v:1,t:'status',id:1,job:'\\xff'}", 0, {0}, 0, 0, BP_EPROTO, "field 'job': string is not valid UTF-8"},
    {"{v:1,t:'status',id:1,job:'\\xc0\\xaf'}", 0, {0}, 0, 0, BP_EPROTO, "not valid UTF-8"},
    {"{v:1,t:'status',id:1,job:'\\xed\\xa0\\x80'}", 0, {0}, 0, 0, BP_EPROTO, "not valid UTF-8"},
    {"{v:1,t:'status',id:1,job:'a\\x00b'}", 0, {0}, 0, 0, BP_EPROTO, "contains NUL"},
    {"{v:1,t:'ok',id:1,'\\xfe':1}", 0, {0}, 0, 0, BP_EPROTO, "key is not valid UTF-8"},
    /* Opaque maps are still checked structurally. */
    {"{" OKT ",params:[1]}", 0, {0}, 0, 0, BP_EPROTO, "field 'params': expected a map, got array"},
    {"{" OKT ",params:{a:{b:[1.0, nan]}}}", 0, {0}, 0, 0, BP_EPROTO, "field 'params': float is not finite"},
    {"{" OKT ",params:{a:-inf}}", 0, {0}, 0, 0, BP_EPROTO, "not finite"},
    {"{" OKT ",params:{1:2}}", 0, {0}, 0, 0, BP_EPROTO, "field 'params': map key of type"},
    {"{" OKT ",params:{'\\xff':2}}", 0, {0}, 0, 0, BP_EPROTO, "not valid UTF-8"},
    {"{" OKT ",params:{a:A(140000)}}", 0, {0}, 0, 0, BP_EPROTO, "more than 131072 objects"},
    /* Binary frames. */
    {"{" OKT ",params:{}," BIN1("f32", 4) "}", 2, {16, 16}, 0, 0, BP_EPROTO, "too many frames"},
    {"{" OKT ",params:{},bin:[{name:'a',dtype:'f32',count:1},{name:'b',dtype:'f32',count:1}]}",
     1, {4}, 0, 0, BP_EPROTO, "too few frames"},
    {"{" OKT ",params:{}}", 1, {4}, 0, 0, BP_EPROTO, "declares 0 binary frames"},
    {"{" OKT ",params:{}," BIN1("f32", 4) "}", 1, {15}, 0, 0, BP_EPROTO, "frame size 15 != count 4 x 4 bytes"},
    {"{" OKT ",params:{}," BIN1("f64", 2305843009213693952) "}", 1, {8}, 0, 0, BP_EPROTO,
     "overflows"},
    {"{" OKT ",params:{}," BIN1("u16", 9223372036854775808) "}", 1, {8}, 0, 0, BP_EPROTO,
     "overflows"},
    {"{" OKT ",params:{}," BIN1("f32", 1099511627776) "}", 1, {8}, 0, 0, BP_EPROTO,
     "exceed the binary frame limit"},
    {"{" OKT ",params:{}," BIN1("f32", 4) "}", 1, {16}, 0xff, 0, BP_EPROTO, "f32 frame holds a non-finite value"},
    {"{" OKT ",params:{}," BIN1("f64", 2) "}", 1, {16}, 0xff, 0, BP_EPROTO, "f64 frame holds a non-finite value"},
    {"{" OKT ",params:{}," BIN1("f16", 2) "}", 1, {4}, 0, 0, BP_EPROTO, "expected one of f32"},
    {"{" OKT ",params:{}," BIN1("f32", -2) "}", 1, {4}, 0, 0, BP_EPROTO, "field 'count': expected an unsigned integer"},
    {"{" OKT ",params:{},bin:[{name:'a b',dtype:'u8',count:1}]}", 1, {1}, 0, 0, BP_EPROTO, "field 'name'"},
    {"{" OKT ",params:{},bin:[{name:'a',dtype:'u8',count:1,x:1}]}", 1, {1}, 0, 0, BP_EPROTO, "bin[0]: unknown field 'x'"},
    {"{" OKT ",params:{},bin:[{name:'a',dtype:'u8'}]}", 1, {1}, 0, 0, BP_EPROTO, "missing required field 'count'"},
    {"{" OKT ",params:{},bin:[{name:'a',dtype:'u8',count:1},{name:'a',dtype:'u8',count:1}]}",
     2, {1, 1}, 0, 0, BP_EPROTO, "duplicate binary frame name"},
    {"{" OKT ",params:{},bin:{}}", 0, {0}, 0, 0, BP_EPROTO, "field 'bin': expected an array"},
    {"{v:1,t:'jobs_reply',id:1,jobs:[{job:'a',state:'done',done:1}]}", 0, {0}, 0, 0, BP_EPROTO,
     "jobs[0]: missing required field 'total'"},
    {"{v:1,t:'jobs_reply',id:1,jobs:[{job:'a',state:'done',done:1,total:1},5]}", 0, {0}, 0, 0,
     BP_EPROTO, "jobs[1]: expected a map"},
    /* Limits and sender policy. */
    {"{v:1,t:'ok',id:1,pad:S(100)}", 0, {0}, 0, LIM_SMALL, BP_EPROTO, "header frame of"},
    {"{" OKT ",params:{}," BIN1("u8", 100) "}", 1, {100}, 0, LIM_SMALL, BP_EPROTO,
     "exceed the binary frame limit 64"},
    {"{v:1,t:'submit',id:1,job:'{}'}", 0, {0}, 0, LIM_WORKER_PEER, BP_EPROTO,
     "'submit' is not accepted from this peer"},
    {"{v:1,t:'ready',id:1,worker:'w',threads:1,pid:1}", 0, {0}, 0, LIM_WORKER_PEER, BP_OK, NULL},
    /* Accepted variants: nil optionals, absent optionals, ints for floats, any key order. */
    {"{id:1,t:'ok',v:1}", 0, {0}, 0, 0, BP_OK, NULL},
    {"{v:1,t:'status_reply',id:1,job:'j',state:'queued',done:0,total:0,progress:0,eta_s:nil,"
     "error_code:nil,error:nil}", 0, {0}, 0, 0, BP_OK, NULL},
    {"{v:1,t:'status_reply',id:1,job:'j',state:'queued',done:0,total:0,progress:0.25f}", 0,
     {0}, 0, 0, BP_OK, NULL},
    {"{v:1,t:'status',id:1,job:'\\xe2\\x82\\xac'}", 0, {0}, 0, 0, BP_OK, NULL},
    {"{" OKT ",params:{}," BIN1("f32", 4) "}", 1, {16}, 0, 0, BP_OK, NULL},
    {"{" OKT ",params:{}," BIN1("u8", 4) "}", 1, {4}, 0xff, 0, BP_OK, NULL},
};

static void limits_for(int kind, bp_proto_limits *lim)
{
    bp_proto_limits_default(lim);
    if (kind == LIM_SMALL) {
        lim->max_header_bytes = 96;
        lim->max_frame_bytes = 64;
    } else if (kind == LIM_WORKER_PEER) {
        lim->accept = BP_PROTO_FROM_WORKER;
    }
}

static void test_hostile_table(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    size_t n_hostile = 0;
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        const hcase *c = &hostile[i];
        tu_build(&sb, c->notation);
        bp_frame frames[4];
        uint8_t *extra[3] = {NULL, NULL, NULL};
        frames[0].data = sb.data;
        frames[0].size = sb.size;
        for (size_t k = 0; k < c->n_extra; k++) {
            extra[k] = malloc(c->extra_size[k] ? c->extra_size[k] : 1);
            memset(extra[k], c->fill, c->extra_size[k]);
            frames[1 + k].data = extra[k];
            frames[1 + k].size = c->extra_size[k];
        }
        bp_proto_limits lim;
        limits_for(c->limits, &lim);
        bp_msg m;
        bp_msg_init(&m);
        bp_error e;
        bp_error_clear(&e);
        int rc = bp_proto_decode(frames, 1 + c->n_extra, &lim, &m, &e);
        if (rc != c->code || (c->substr && !strstr(e.msg, c->substr))) {
            fprintf(stderr, "case %zu (%.60s): rc %d (%s), want %d '%s'\n", i, c->notation, rc,
                    e.msg, c->code, c->substr ? c->substr : "");
            fail();
        }
        if (rc != BP_OK) {
            n_hostile++;
            assert_int_equal(m.type, BP_MSG_NONE);
            assert_null(m.priv_alloc);
            assert_null(m.priv_unpacked.zone);
        }
        bp_msg_clear(&m);
        for (size_t k = 0; k < c->n_extra; k++)
            free(extra[k]);
    }
    assert_true(n_hostile >= 30);
    fprintf(stderr, "[          ] %zu hostile messages rejected as expected\n", n_hostile);
    msgpack_sbuffer_destroy(&sb);
}

static void test_hostile_frame_lists(void **state)
{
    (void)state;
    bp_msg m;
    bp_msg_init(&m);
    bp_error e;
    assert_int_equal(bp_proto_decode(NULL, 0, NULL, &m, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "no frames"));
    bp_frame frames[BP_PROTO_MAX_BIN + 2];
    memset(frames, 0, sizeof frames);
    assert_int_equal(bp_proto_decode(frames, BP_PROTO_MAX_BIN + 2, NULL, &m, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "too many frames"));
    assert_int_equal(bp_proto_decode(frames, 1, NULL, NULL, &e), BP_EINVAL);
    bp_frame nul = {NULL, 5};
    assert_int_equal(bp_proto_decode(&nul, 1, NULL, &m, &e), BP_EINVAL);
}

/* A failed decode still reports the request id when it was readable. */
static void test_failure_keeps_request_id(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tu_build(&sb, "{v:1,t:'status',id:42,job:'j',bogus:1}");
    bp_frame f = {sb.data, sb.size};
    bp_msg m;
    bp_msg_init(&m);
    bp_error e;
    assert_int_equal(bp_proto_decode(&f, 1, NULL, &m, &e), BP_EPROTO);
    assert_true(m.has_id);
    assert_int_equal(m.id, 42);
    assert_int_equal(m.type, BP_MSG_NONE);
    tu_build(&sb, "{v:2,t:'status2',id:43,job:'j',new_field:[]}");
    f.data = sb.data;
    f.size = sb.size;
    assert_int_equal(bp_proto_decode(&f, 1, NULL, &m, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "unsupported protocol version 2"));
    assert_true(m.has_id);
    assert_int_equal(m.id, 43);
    tu_build(&sb, "{v:1,t:'status',id:-4,job:'j'}");
    f.data = sb.data;
    f.size = sb.size;
    assert_int_equal(bp_proto_decode(&f, 1, NULL, &m, &e), BP_EPROTO);
    assert_false(m.has_id);
    msgpack_sbuffer_destroy(&sb);
}

/* jobs_reply: exactly at the limit passes, one more is refused. */
static void test_jobs_reply_limit(void **state)
{
    (void)state;
    size_t n = BP_PROTO_DEF_MAX_JOBS + 1;
    bp_proto_job_entry *jobs = calloc(n, sizeof *jobs);
    char (*ids)[16] = calloc(n, sizeof *ids);
    assert_non_null(jobs);
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof ids[i], "job-%zu", i);
        jobs[i].job = bp_str_c(ids[i]);
        jobs[i].state = bp_str_c("done");
        jobs[i].done = jobs[i].total = i;
    }
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    bp_error e;
    assert_int_equal(bp_proto_encode_jobs_reply(&out, 1, jobs, n - 1, &e), BP_OK);
    const bp_msg *m = decode_out(&out);
    assert_int_equal(m->u.jobs_reply.n_jobs, n - 1);
    assert_str(m->u.jobs_reply.jobs[n - 2].job, "job-9999");
    bp_msg_clear(&g_msg);

    /* Build the over-limit frame by hand: the encoder refuses to. */
    assert_int_equal(bp_proto_encode_jobs_reply(&out, 1, jobs, n, &e), BP_EINVAL);
    assert_non_null(strstr(e.msg, "10001 entries exceed the limit 10000"));
    bp_proto_limits big;
    bp_proto_limits_default(&big);
    big.max_jobs = n;
    bp_proto_out out_big;
    bp_proto_out_init(&out_big, &big);
    assert_int_equal(bp_proto_encode_jobs_reply(&out_big, 1, jobs, n, &e), BP_OK);
    bp_frame f = {out_big.header.data, out_big.header.size};
    bp_msg m2;
    bp_msg_init(&m2);
    assert_int_equal(bp_proto_decode(&f, 1, NULL, &m2, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "jobs_reply: field 'jobs': 10001 entries exceed the limit 10000"));
    assert_int_equal(bp_proto_decode(&f, 1, &big, &m2, &e), BP_OK);
    bp_msg_clear(&m2);
    bp_proto_out_clear(&out_big);
    bp_proto_out_clear(&out);
    free(ids);
    free(jobs);
}

static void test_msg_lifecycle_and_names(void **state)
{
    (void)state;
    bp_msg *m = NULL;
    assert_int_equal(bp_msg_new(&m), BP_OK);
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    bp_error e;
    assert_int_equal(bp_proto_encode_status(&out, 1, bp_str_c("a"), &e), BP_OK);
    bp_frame f = {out.header.data, out.header.size};
    assert_int_equal(bp_proto_decode(&f, 1, NULL, m, &e), BP_OK);
    /* Decoding again into the same message releases the first decode. */
    assert_int_equal(bp_proto_decode(&f, 1, NULL, m, &e), BP_OK);
    bp_msg_destroy(&m);
    assert_null(m);
    bp_msg_destroy(&m);
    bp_msg_destroy(NULL);
    bp_msg_clear(NULL);
    bp_proto_out_clear(&out);
    bp_proto_out_clear(&out);

    for (int t = BP_MSG_NONE + 1; t < BP_MSG_TYPE_COUNT; t++) {
        assert_string_not_equal(bp_msg_type_name((bp_msg_type)t), "?");
        assert_true(bp_msg_type_senders((bp_msg_type)t) != 0);
    }
    assert_string_equal(bp_msg_type_name(BP_MSG_NONE), "?");
    assert_string_equal(bp_msg_type_name(BP_MSG_STATUS_REPLY), "status_reply");
    assert_int_equal(bp_msg_type_senders(BP_MSG_DISCONNECT),
                     BP_PROTO_FROM_COORDINATOR | BP_PROTO_FROM_WORKER);
    assert_int_equal(bp_wire_dtype_size(BP_WIRE_U16), 2);
    assert_string_equal(bp_wire_dtype_name(BP_WIRE_I64), "i64");
}

static void test_wire_codes(void **state)
{
    (void)state;
    const int codes[] = {BP_OK, BP_EINVAL, BP_EIO, BP_EFORMAT, BP_ENOMEM, BP_EUNSUPPORTED,
                         BP_EINFEASIBLE, BP_ESOLVER, BP_ETIMEOUT, BP_ENOTFOUND, BP_EMISMATCH,
                         BP_ECANCELED, BP_EPROTO};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        int32_t w = bp_proto_wire_code(codes[i]);
        assert_int_equal(w, (int32_t)i); /* the documented table */
        assert_int_equal(bp_proto_bp_code(w), codes[i]);
        assert_string_not_equal(bp_proto_wire_code_name(w), "unknown");
    }
    assert_int_equal(bp_proto_wire_code(-999), 99);
    assert_string_equal(bp_proto_wire_code_name(99), "internal");
    assert_int_equal(bp_proto_bp_code(99), BP_EIO);
    assert_int_equal(bp_proto_bp_code(12345), BP_EIO);
    assert_string_equal(bp_proto_wire_code_name(9), "not_found");
    assert_string_equal(bp_proto_wire_code_name(-7), "unknown");
}

static void test_mp_accessors_hostile(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tu_build(&sb, "{a:1,a:2,n:-5,big:18446744073709551615,f:1.5f,s:'x',z:nil,b:false,m:{},"
                  "arr:[]}");
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&u, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *o = &u.data;
    bp_error e;
    uint64_t x;
    int64_t i;
    double d;
    bool b;
    const msgpack_object *sub;
    assert_null(bp_mp_get(o, "a")); /* duplicated: ambiguous */
    assert_int_equal(bp_mp_get_u64(o, "a", &x, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "duplicate key"));
    assert_int_equal(bp_mp_get_u64(o, "n", &x, &e), BP_EPROTO);
    assert_int_equal(bp_mp_get_i64(o, "n", &i, &e), BP_OK);
    assert_int_equal(i, -5);
    assert_int_equal(bp_mp_get_i64(o, "big", &i, &e), BP_EPROTO);
    assert_int_equal(bp_mp_get_u64(o, "big", &x, &e), BP_OK);
    assert_true(x == UINT64_MAX);
    assert_int_equal(bp_mp_get_f64(o, "f", &d, &e), BP_OK);
    assert_true(d == 1.5);
    assert_int_equal(bp_mp_get_f64(o, "n", &d, &e), BP_OK);
    assert_true(d == -5.0);
    assert_int_equal(bp_mp_get_f64(o, "s", &d, &e), BP_EPROTO);
    assert_int_equal(bp_mp_get_str(o, "z", NULL, &e), BP_ENOTFOUND);
    assert_int_equal(bp_mp_get_bool(o, "b", &b, &e), BP_OK);
    assert_false(b);
    assert_int_equal(bp_mp_get_bool(o, "n", &b, &e), BP_EPROTO);
    assert_int_equal(bp_mp_get_map(o, "m", &sub, &e), BP_OK);
    assert_int_equal(bp_mp_get_map(o, "arr", &sub, &e), BP_EPROTO);
    assert_int_equal(bp_mp_get_array(o, "m", NULL, NULL, &e), BP_EPROTO);
    bp_frame bin;
    assert_int_equal(bp_mp_get_bin(o, "s", &bin, &e), BP_EPROTO);
    /* Not a map at all. */
    assert_int_equal(bp_mp_get_u64(&o->via.map.ptr[0].val, "a", &x, &e), BP_EPROTO);
    assert_null(bp_mp_get(NULL, "a"));
    msgpack_unpacked_destroy(&u);

    tu_build(&sb, "{nf:nan}");
    msgpack_unpacked_init(&u);
    off = 0;
    assert_int_equal(msgpack_unpack_next(&u, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(bp_mp_get_f64(&u.data, "nf", &d, &e), BP_EPROTO);
    assert_non_null(strstr(e.msg, "not finite"));
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_roundtrip_client_messages, teardown_msg),
        cmocka_unit_test_teardown(test_roundtrip_coordinator_replies, teardown_msg),
        cmocka_unit_test_teardown(test_roundtrip_worker_messages, teardown_msg),
        cmocka_unit_test_teardown(test_roundtrip_coordinator_to_worker, teardown_msg),
        cmocka_unit_test(test_encoder_refuses_out_of_schema),
        cmocka_unit_test(test_hostile_table),
        cmocka_unit_test(test_hostile_frame_lists),
        cmocka_unit_test(test_failure_keeps_request_id),
        cmocka_unit_test_teardown(test_jobs_reply_limit, teardown_msg),
        cmocka_unit_test(test_msg_lifecycle_and_names),
        cmocka_unit_test(test_wire_codes),
        cmocka_unit_test(test_mp_accessors_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
