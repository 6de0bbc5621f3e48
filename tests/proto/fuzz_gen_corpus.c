/* Writes the seed corpus for fuzz_proto_decode into a directory (argv[1]):
 * one valid encoding of every message type, in the harness's input format,
 * plus the known hostile inputs from docs/protocol.md. Not built by CMake;
 * tests/proto/fuzz_afl.sh shows how to rebuild and run it:
 *   cc -std=c11 -D_GNU_SOURCE -Iinclude tests/proto/fuzz_gen_corpus.c \
 *      build/libbp_proto.a build/libbp_common.a -lmsgpackc -lzmq -lsodium -lm
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/proto.h"

static const char *g_dir;

/* Write profile byte + [u16 len][bytes] per frame. */
static void write_frames(const char *name, uint8_t prof, const bp_frame *f, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        perror(path);
        exit(1);
    }
    fputc(prof, fp);
    for (size_t i = 0; i < n; i++) {
        size_t len = f[i].size;
        if (len > 0xffff) {
            fprintf(stderr, "%s: frame too long for the seed format\n", name);
            exit(1);
        }
        fputc((int)(len & 0xff), fp);
        fputc((int)(len >> 8), fp);
        if (len)
            fwrite(f[i].data, 1, len, fp);
    }
    fclose(fp);
}

static void write_out(const char *name, bp_proto_out *out, int rc, bp_error *e)
{
    if (rc != BP_OK) {
        fprintf(stderr, "%s: %s\n", name, e->msg);
        exit(1);
    }
    bp_frame f[1 + BP_PROTO_MAX_BIN];
    size_t n = bp_proto_out_frames(out, f, 1 + BP_PROTO_MAX_BIN);
    write_frames(name, 0, f, n);
}

static void write_raw(const char *name, const void *bytes, size_t len)
{
    bp_frame f = {bytes, len};
    write_frames(name, 0, &f, 1);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    bp_proto_out out;
    bp_proto_out_init(&out, NULL);
    bp_error e;
    int rc;

    rc = bp_proto_encode_submit(&out, 1, bp_str_c("{\"model\":\"m\",\"budget\":{\"bpw\":4.5}}"), &e);
    write_out("valid-submit", &out, rc, &e);
    rc = bp_proto_encode_status(&out, 2, bp_str_c("job-1"), &e);
    write_out("valid-status", &out, rc, &e);
    rc = bp_proto_encode_result(&out, 3, bp_str_c("job-1"), &e);
    write_out("valid-result", &out, rc, &e);
    rc = bp_proto_encode_cancel(&out, 4, bp_str_c("job-1"), &e);
    write_out("valid-cancel", &out, rc, &e);
    rc = bp_proto_encode_jobs(&out, 5, &e);
    write_out("valid-jobs", &out, rc, &e);
    rc = bp_proto_encode_submitted(&out, 6, bp_str_c("job-1"), &e);
    write_out("valid-submitted", &out, rc, &e);
    bp_msg_status_reply st = {.job = bp_str_c("job-1"), .state = bp_str_c("failed"), .done = 2,
                              .total = 4, .progress = 0.5, .has_eta = true, .eta_s = 3.5,
                              .has_error_code = true, .error_code = 6,
                              .error = bp_str_c("infeasible budget")};
    rc = bp_proto_encode_status_reply(&out, 7, &st, &e);
    write_out("valid-status_reply", &out, rc, &e);
    rc = bp_proto_encode_result_reply(&out, 8, bp_str_c("job-1"), bp_str_c("{\"plan\":[]}"), &e);
    write_out("valid-result_reply", &out, rc, &e);
    bp_proto_job_entry jobs[2] = {{bp_str_c("a"), bp_str_c("queued"), 0, 3},
                                  {bp_str_c("b"), bp_str_c("done"), 3, 3}};
    rc = bp_proto_encode_jobs_reply(&out, 9, jobs, 2, &e);
    write_out("valid-jobs_reply", &out, rc, &e);
    rc = bp_proto_encode_ok(&out, 10, &e);
    write_out("valid-ok", &out, rc, &e);
    rc = bp_proto_encode_error(&out, 11, 9, bp_str_c("no such job"), &e);
    write_out("valid-error", &out, rc, &e);
    rc = bp_proto_encode_ready(&out, 12, bp_str_c("host/1"), 4, 1234, &e);
    write_out("valid-ready", &out, rc, &e);
    uint64_t task = 5;
    rc = bp_proto_encode_heartbeat(&out, 13, 99, &task, &e);
    write_out("valid-heartbeat", &out, rc, &e);

    /* {"layer": "blk.0", "bits": 4, "scale": 0.5, "exact": true,
     *  "rows": [1, 2], "sub": {"a": -1}, "blob": <bin 2>} */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    msgpack_pack_str_with_body(&pk, "layer", 5);
    msgpack_pack_str_with_body(&pk, "blk.0", 5);
    msgpack_pack_str_with_body(&pk, "bits", 4);
    msgpack_pack_uint8(&pk, 4);
    msgpack_pack_str_with_body(&pk, "scale", 5);
    msgpack_pack_float(&pk, 0.5f);
    msgpack_pack_str_with_body(&pk, "exact", 5);
    msgpack_pack_true(&pk);
    msgpack_pack_str_with_body(&pk, "rows", 4);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_uint8(&pk, 2);
    msgpack_pack_str_with_body(&pk, "sub", 3);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "a", 1);
    msgpack_pack_int8(&pk, -1);
    msgpack_pack_str_with_body(&pk, "blob", 4);
    msgpack_pack_bin_with_body(&pk, "\x01\x02", 2);

    float rows[4] = {0.25f, 0.5f, 1.0f, 2.0f};
    double h[2] = {1.5, -2.5};
    uint16_t codes[3] = {1, 2, 3};
    bp_bin_view bins[3] = {{bp_str_c("row_err"), BP_WIRE_F32, 4, rows, sizeof rows},
                           {bp_str_c("hdiag"), BP_WIRE_F64, 2, h, sizeof h},
                           {bp_str_c("codes"), BP_WIRE_U16, 3, codes, sizeof codes}};
    rc = bp_proto_encode_task_result(&out, 14, 5, bp_str_c("blake2b256:00ff"), sb.data, sb.size,
                                     bins, 3, &e);
    write_out("valid-task_result", &out, rc, &e);
    rc = bp_proto_encode_task_failed(&out, 15, 5, 7, bp_str_c("solver failed"), &e);
    write_out("valid-task_failed", &out, rc, &e);
    rc = bp_proto_encode_disconnect(&out, 16, &e);
    write_out("valid-disconnect", &out, rc, &e);
    rc = bp_proto_encode_welcome(&out, 17, 1000, 3, &e);
    write_out("valid-welcome", &out, rc, &e);
    uint8_t mask[2] = {0, 1};
    int64_t offs[1] = {-7};
    bp_bin_view tb[2] = {{bp_str_c("mask"), BP_WIRE_U8, 2, mask, sizeof mask},
                         {bp_str_c("offsets"), BP_WIRE_I64, 1, offs, sizeof offs}};
    rc = bp_proto_encode_task(&out, 18, 5, bp_str_c("sweep"), sb.data, sb.size, 60000, tb, 2,
                              &e);
    write_out("valid-task", &out, rc, &e);

    /* Hostile inputs (docs/protocol.md, "Known hostile inputs"). */
    write_raw("hostile-array32-huge", "\xdd\xff\xff\xff\xff", 5);
    write_raw("hostile-map32-huge", "\xdf\xff\xff\xff\xff", 5);
    uint8_t deep[34];
    memset(deep, 0x91, 33);
    deep[33] = 0x01;
    write_raw("hostile-nested-33", deep, 33);        /* 33 x 0x91, truncated */
    write_raw("hostile-nested-33-closed", deep, 34); /* ... with a leaf */
    write_raw("hostile-bin32-truncated", "\xc6\x00\x01\x00\x00", 5);
    rc = bp_proto_encode_ok(&out, 19, &e);
    if (rc)
        return 1;
    uint8_t *plus = malloc(out.header.size + 1);
    memcpy(plus, out.header.data, out.header.size);
    plus[out.header.size] = 0xc0;
    write_raw("hostile-valid-plus-1-byte", plus, out.header.size + 1);
    free(plus);
    /* Valid task_result with a NaN slipped into its f32 frame. */
    rc = bp_proto_encode_task_result(&out, 20, 5, bp_str_c("h"), NULL, 0, bins, 1, &e);
    if (rc)
        return 1;
    bp_frame f[2];
    bp_proto_out_frames(&out, f, 2);
    float nanrows[4] = {0.25f, 0.5f, NAN, 2.0f};
    f[1].data = nanrows;
    write_frames("hostile-nan-in-frame", 0, f, 2);

    msgpack_sbuffer_destroy(&sb);
    bp_proto_out_clear(&out);
    return 0;
}
