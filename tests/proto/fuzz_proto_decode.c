/* Fuzz harness for the whole proto decode pipeline (wire_check, msgpack-c,
 * schema, binary frames), plus re-encoding of whatever decodes.
 *
 * Input format (so a fuzzer can shape multipart messages):
 *   byte 0       limits profile: (b & 3) == 0 defaults, 1 tiny limits,
 *                2 accept only worker messages, 3 non-finite bins allowed
 *   then frames  [u16 little-endian length][bytes], repeated; a length past
 *                the end takes what remains; at most 20 frames
 * Each frame is copied into its own malloc of exactly its size, so ASan sees
 * any over-read of a frame.
 *
 * Builds:
 *   -DBP_FUZZING with -fsanitize=fuzzer (libFuzzer or AFL++'s driver):
 *     just LLVMFuzzerTestOneInput.
 *   without BP_FUZZING: a main() replaying every file named on the command
 *     line (directories are walked one level), e.g. the seed corpus in
 *     tests/proto/corpus/, as an ordinary CTest test under ASan/UBSan.
 *
 * Decoding must never abort or leak. The harness aborts on purpose only when
 * an invariant breaks: a decoded message that the encoder cannot re-encode,
 * or whose re-encoding does not decode to the same type and id.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/proto.h"

#define MAX_FUZZ_FRAMES 20

/* Replay only: print each input's outcome (BP_FUZZ_VERBOSE=1). */
static int g_verbose;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void profile(uint8_t b, bp_proto_limits *lim)
{
    bp_proto_limits_default(lim);
    switch (b & 3) {
    case 1:
        lim->max_header_bytes = 256;
        lim->max_frame_bytes = 64;
        lim->max_bin_frames = 2;
        lim->max_name_bytes = 8;
        lim->max_text_bytes = 16;
        lim->max_job_spec_bytes = 32;
        lim->max_plan_bytes = 32;
        lim->max_jobs = 3;
        lim->max_depth = 4;
        lim->max_nodes = 64;
        break;
    case 2:
        lim->accept = BP_PROTO_FROM_WORKER;
        break;
    case 3:
        lim->allow_nonfinite_bin = true;
        break;
    }
}

/* Touch every byte a view claims, so a bad view shows up under ASan. */
static volatile unsigned sink;
static void touch(const void *p, size_t n)
{
    const unsigned char *c = p;
    unsigned s = 0;
    for (size_t i = 0; i < n; i++)
        s += c[i];
    sink += s;
}

static void touch_str(bp_str s)
{
    if (s.ptr)
        touch(s.ptr, s.len);
}

static void exercise(const bp_msg *m)
{
    bp_error e;
    switch (m->type) {
    case BP_MSG_SUBMIT: touch_str(m->u.submit.job); break;
    case BP_MSG_STATUS_REPLY:
        touch_str(m->u.status_reply.job);
        touch_str(m->u.status_reply.state);
        touch_str(m->u.status_reply.error);
        break;
    case BP_MSG_RESULT_REPLY: touch_str(m->u.result_reply.plan); break;
    case BP_MSG_JOBS_REPLY:
        for (size_t i = 0; i < m->u.jobs_reply.n_jobs; i++) {
            touch_str(m->u.jobs_reply.jobs[i].job);
            touch_str(m->u.jobs_reply.jobs[i].state);
        }
        break;
    case BP_MSG_ERROR: touch_str(m->u.error.message); break;
    case BP_MSG_READY: touch_str(m->u.ready.worker); break;
    case BP_MSG_TASK_FAILED: touch_str(m->u.task_failed.message); break;
    case BP_MSG_TASK_RESULT:
    case BP_MSG_TASK: {
        const msgpack_object *map =
            m->type == BP_MSG_TASK ? m->u.task.params : m->u.task_result.result;
        bp_str s;
        uint64_t u;
        int64_t i;
        double d;
        bool b;
        const msgpack_object *items, *sub;
        size_t n;
        bp_frame f;
        if (bp_mp_get_str(map, "layer", &s, &e) == BP_OK)
            touch_str(s);
        bp_mp_get_u64(map, "bits", &u, &e);
        bp_mp_get_i64(map, "a", &i, &e);
        bp_mp_get_f64(map, "scale", &d, &e);
        bp_mp_get_bool(map, "exact", &b, &e);
        if (bp_mp_get_array(map, "rows", &items, &n, &e) == BP_OK)
            for (size_t k = 0; k < n; k++)
                sink += (unsigned)items[k].type;
        bp_mp_get_map(map, "sub", &sub, &e);
        if (bp_mp_get_bin(map, "blob", &f, &e) == BP_OK)
            touch(f.data, f.size);
        break;
    }
    default: break;
    }
    for (size_t i = 0; i < m->n_bin; i++) {
        const bp_bin_view *v = &m->bin[i];
        void *dst = malloc(v->size ? v->size : 1);
        if (!dst)
            continue;
        if (bp_proto_bin_copy(v, v->dtype, dst, v->size, &e) != BP_OK)
            abort(); /* a decoded view must be copyable as declared */
        touch(dst, v->size);
        free(dst);
        touch_str(v->name);
    }
}

static void reencode(const bp_msg *m, const bp_proto_limits *lim, size_t header_size)
{
    bp_proto_out out;
    bp_proto_out_init(&out, lim);
    bp_error e;
    int rc = bp_proto_encode(&out, m, &e);
    /* Integers decoded into float fields grow to float64 on re-encode, so
     * near the header limit a refusal is legitimate. */
    if (rc != BP_OK && header_size + 64 <= lim->max_header_bytes) {
        fprintf(stderr, "fuzz invariant: re-encode of %s failed: %s\n",
                bp_msg_type_name(m->type), e.msg);
        abort();
    }
    if (rc == BP_OK) {
        bp_frame frames[1 + BP_PROTO_MAX_BIN];
        size_t n = bp_proto_out_frames(&out, frames, 1 + BP_PROTO_MAX_BIN);
        bp_msg again;
        bp_msg_init(&again);
        if (bp_proto_decode(frames, n, lim, &again, &e) != BP_OK || again.type != m->type ||
            again.id != m->id || again.n_bin != m->n_bin) {
            fprintf(stderr, "fuzz invariant: re-encoded %s does not decode back: %s\n",
                    bp_msg_type_name(m->type), e.msg);
            abort();
        }
        bp_msg_clear(&again);
    }
    bp_proto_out_clear(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bp_proto_limits lim;
    profile(data[0], &lim);
    size_t pos = 1;
    bp_frame frames[MAX_FUZZ_FRAMES];
    void *bufs[MAX_FUZZ_FRAMES];
    size_t n = 0;
    while (n < MAX_FUZZ_FRAMES && size - pos >= 2) {
        size_t len = (size_t)data[pos] | ((size_t)data[pos + 1] << 8);
        pos += 2;
        if (len > size - pos)
            len = size - pos;
        /* Exact-size copies; a 0-byte frame gets a 1-byte allocation that
         * the decoder must not read (size says 0). */
        bufs[n] = malloc(len ? len : 1);
        if (!bufs[n])
            break;
        if (len)
            memcpy(bufs[n], data + pos, len);
        frames[n].data = bufs[n];
        frames[n].size = len;
        n++;
        pos += len;
    }

    bp_msg m;
    bp_msg_init(&m);
    bp_error e;
    int rc = bp_proto_decode(frames, n, &lim, &m, &e);
    if (g_verbose)
        printf("  %zu frames: %s\n", n, rc == BP_OK ? bp_msg_type_name(m.type) : e.msg);
    if (rc == BP_OK) {
        exercise(&m);
        reencode(&m, &lim, frames[0].size);
    }
    bp_msg_clear(&m);
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    return 0;
}

#ifndef BP_FUZZING
#include <dirent.h>
#include <sys/stat.h>

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open\n", path);
        return 1;
    }
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return 1;
    }
    long sz = ftell(f);
    rewind(f);
    if (sz < 0) {
        fclose(f);
        return 1;
    }
    /* Exactly the file's size, so ASan catches any over-read. */
    uint8_t *buf = malloc(sz ? (size_t)sz : 1);
    if (!buf || fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        fprintf(stderr, "%s: read failed\n", path);
        free(buf);
        fclose(f);
        return 1;
    }
    fclose(f);
    if (g_verbose)
        printf("%s\n", path);
    LLVMFuzzerTestOneInput(buf, (size_t)sz);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int failures = 0;
    size_t files = 0;
    const char *v = getenv("BP_FUZZ_VERBOSE");
    g_verbose = v && *v && *v != '0';
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    for (int a = 1; a < argc; a++) {
        struct stat st;
        if (stat(argv[a], &st) != 0) {
            fprintf(stderr, "%s: not found\n", argv[a]);
            failures++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            failures += replay_file(argv[a]);
            files++;
            continue;
        }
        DIR *d = opendir(argv[a]);
        if (!d) {
            failures++;
            continue;
        }
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            char path[4096];
            if (de->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "%s/%s", argv[a], de->d_name);
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            failures += replay_file(path);
            files++;
        }
        closedir(d);
    }
    printf("replayed %zu inputs, %d unreadable\n", files, failures);
    if (files == 0)
        return 1; /* an empty corpus is a broken test, not a pass */
    return failures ? 1 : 0;
}
#endif
