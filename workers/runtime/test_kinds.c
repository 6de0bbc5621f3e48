/* bitplan worker runtime: the "test" job driver and the "test_task" and
 * "noop" task kinds, used by the runtime's tests and benchmarks (enabled in
 * serve/worker/embedded only with BITPLAN_TEST_KINDS=1). Results depend only
 * on (task index, seed), so a run's final JSON is byte-identical whatever
 * the number of workers, kills and restarts. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bitplan/hash.h"
#include "bitplan/worker.h"

#define MAX_TEST_TASKS 1000000
#define BATCH 64 /* tasks per next() call */
#define PATH_CAP 1024

typedef struct tdrv {
    uint64_t n, sleep_ms, seed, stages;
    int64_t fail, crash, hang;
    char task_kind[16];
    char count_file[PATH_CAP];
    char once_dir[PATH_CAP];
    uint64_t emitted, n_done;
    unsigned char *done;
    char (*values)[65];
    /* the batch handed out by the last next() */
    bp_task_req reqs[BATCH];
    msgpack_sbuffer params[BATCH];
    size_t n_batch;
} tdrv;

static const char *mode_of(const tdrv *d, uint64_t i)
{
    if ((int64_t)i == d->fail)
        return "fail";
    if ((int64_t)i == d->crash)
        return "crash";
    if ((int64_t)i == d->hang)
        return "hang";
    return "ok";
}

void bp_runtime_test_task_hash(uint64_t i, uint64_t seed, const char *mode,
                               char out[BP_HASH_HEX_LEN + 1])
{
    bp_hash h;
    bp_hash_init(&h);
    bp_hash_update_str(&h, "bitplan.test_task/v1");
    bp_hash_update_str(&h, mode);
    bp_hash_update_u64(&h, i);
    bp_hash_update_u64(&h, seed);
    bp_hash_final_hex(&h, out);
}

static void noop_hash(uint64_t i, uint64_t seed, char out[BP_HASH_HEX_LEN + 1])
{
    bp_hash h;
    bp_hash_init(&h);
    bp_hash_update_str(&h, "bitplan.noop/v1");
    bp_hash_update_u64(&h, i);
    bp_hash_update_u64(&h, seed);
    bp_hash_final_hex(&h, out);
}

/* The value test task i computes: 64 hex digits. */
static void test_value(uint64_t i, uint64_t seed, char out[65], double data[4])
{
    bp_hash h;
    bp_hash_init(&h);
    bp_hash_update_str(&h, "bitplan.test_value/v1");
    bp_hash_update_u64(&h, i);
    bp_hash_update_u64(&h, seed);
    unsigned char d[BP_HASH_BYTES];
    bp_hash_final(&h, d);
    for (int k = 0; k < BP_HASH_BYTES; k++)
        snprintf(out + 2 * k, 3, "%02x", d[k]);
    for (int k = 0; k < 4; k++)
        data[k] = (double)d[k] / 256.0 + (double)i;
}

static int get_int(json_t *root, const char *key, int64_t lo, int64_t hi, int64_t def,
                   int required, int64_t *out, bp_error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v) {
        if (required)
            return bp_error_set(err, BP_EINVAL, "test job spec: missing field '%s'", key);
        *out = def;
        return BP_OK;
    }
    if (!json_is_integer(v))
        return bp_error_set(err, BP_EINVAL, "test job spec: '%s' must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return bp_error_set(err, BP_EINVAL, "test job spec: '%s' = %lld is outside [%lld, %lld]",
                            key, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return BP_OK;
}

static int get_path(json_t *root, const char *key, char *out, bp_error *err)
{
    json_t *v = json_object_get(root, key);
    out[0] = '\0';
    if (!v)
        return BP_OK;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= PATH_CAP ||
        strlen(json_string_value(v)) != json_string_length(v))
        return bp_error_set(err, BP_EINVAL, "test job spec: '%s' must be a non-empty path", key);
    snprintf(out, PATH_CAP, "%s", json_string_value(v));
    return BP_OK;
}

static void drv_destroy(void *state);

static int drv_create(const char *spec, size_t len, void **state, bp_error *err)
{
    *state = NULL;
    json_error_t je;
    json_t *root = json_loadb(spec, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return bp_error_set(err, BP_EFORMAT, "test job spec: invalid JSON at line %d: %s",
                            je.line, je.text);
    tdrv *d = calloc(1, sizeof *d);
    int rc = d ? BP_OK : bp_error_set(err, BP_ENOMEM, "out of memory");
    int64_t n = 0, sleep_ms = 0, seed = 0, stages = 1;
    if (rc == BP_OK && !json_is_object(root))
        rc = bp_error_set(err, BP_EINVAL, "test job spec: not a JSON object");
    if (rc == BP_OK)
        rc = get_int(root, "tasks", 1, MAX_TEST_TASKS, 0, 1, &n, err);
    if (rc == BP_OK)
        rc = get_int(root, "sleep_ms", 0, 600000, 0, 0, &sleep_ms, err);
    if (rc == BP_OK)
        rc = get_int(root, "seed", 0, INT64_MAX, 0, 0, &seed, err);
    if (rc == BP_OK)
        rc = get_int(root, "stages", 1, 16, 1, 0, &stages, err);
    if (rc == BP_OK)
        rc = get_int(root, "fail_task", -1, n - 1, -1, 0, &d->fail, err);
    if (rc == BP_OK)
        rc = get_int(root, "crash_task", -1, n - 1, -1, 0, &d->crash, err);
    if (rc == BP_OK)
        rc = get_int(root, "hang_task", -1, n - 1, -1, 0, &d->hang, err);
    if (rc == BP_OK)
        rc = get_path(root, "count_file", d->count_file, err);
    if (rc == BP_OK)
        rc = get_path(root, "once_dir", d->once_dir, err);
    if (rc == BP_OK) {
        json_t *tk = json_object_get(root, "task_kind");
        const char *k = tk ? json_string_value(tk) : "test_task";
        if (!k || (strcmp(k, "test_task") && strcmp(k, "noop")))
            rc = bp_error_set(err, BP_EINVAL,
                              "test job spec: 'task_kind' must be \"test_task\" or \"noop\"");
        else
            snprintf(d->task_kind, sizeof d->task_kind, "%s", k);
    }
    if (rc == BP_OK) {
        d->n = (uint64_t)n;
        d->sleep_ms = (uint64_t)sleep_ms;
        d->seed = (uint64_t)seed;
        d->stages = (uint64_t)stages;
        d->done = calloc(d->n, 1);
        d->values = calloc(d->n, sizeof *d->values);
        if (!d->done || !d->values)
            rc = bp_error_set(err, BP_ENOMEM, "out of memory");
    }
    json_decref(root);
    if (rc != BP_OK) {
        drv_destroy(d);
        return rc;
    }
    *state = d;
    return BP_OK;
}

static void clear_batch(tdrv *d)
{
    for (size_t k = 0; k < d->n_batch; k++)
        msgpack_sbuffer_destroy(&d->params[k]);
    d->n_batch = 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static int drv_next(void *state, const bp_task_req **tasks, size_t *n, bp_error *err)
{
    tdrv *d = state;
    clear_batch(d);
    /* Stage s may start once every task of the earlier stages is done. */
    uint64_t limit = d->n;
    for (uint64_t s = 1; s < d->stages; s++) {
        uint64_t end = d->n * s / d->stages;
        if (d->n_done < end) {
            limit = end;
            break;
        }
    }
    while (d->emitted < limit && d->n_batch < BATCH) {
        uint64_t i = d->emitted++;
        bp_task_req *r = &d->reqs[d->n_batch];
        msgpack_sbuffer *sb = &d->params[d->n_batch];
        msgpack_sbuffer_init(sb);
        d->n_batch++;
        msgpack_packer pk;
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        memset(r, 0, sizeof *r);
        r->index = i;
        r->cost = d->sleep_ms + 1;
        snprintf(r->kind, sizeof r->kind, "%s", d->task_kind);
        if (!strcmp(d->task_kind, "noop")) {
            msgpack_pack_map(&pk, 0);
            noop_hash(i, d->seed, r->hash);
        } else {
            const char *mode = mode_of(d, i);
            msgpack_pack_map(&pk, 4 + !!d->count_file[0] + !!d->once_dir[0]);
            pack_str(&pk, "i");
            msgpack_pack_uint64(&pk, i);
            pack_str(&pk, "sleep_ms");
            msgpack_pack_uint64(&pk, d->sleep_ms);
            pack_str(&pk, "mode");
            pack_str(&pk, mode);
            pack_str(&pk, "seed");
            msgpack_pack_uint64(&pk, d->seed);
            if (d->count_file[0]) {
                pack_str(&pk, "count_file");
                pack_str(&pk, d->count_file);
            }
            if (d->once_dir[0]) {
                pack_str(&pk, "once_dir");
                pack_str(&pk, d->once_dir);
            }
            bp_runtime_test_task_hash(i, d->seed, mode, r->hash);
        }
        if (!sb->data)
            return bp_error_set(err, BP_ENOMEM, "out of memory");
        r->params_mp = sb->data;
        r->params_len = sb->size;
    }
    *tasks = d->reqs;
    *n = d->n_batch;
    return BP_OK;
}

static int drv_done(void *state, uint64_t index, const bp_task_result *r, bp_error *err)
{
    tdrv *d = state;
    if (index >= d->emitted || d->done[index])
        return bp_error_set(err, BP_EINVAL, "test driver: unexpected result for task %" PRIu64,
                            index);
    if (!strcmp(d->task_kind, "test_task")) {
        uint64_t i = 0;
        bp_str v;
        int rc = bp_mp_get_u64(r->result, "i", &i, err);
        if (rc == BP_OK)
            rc = bp_mp_get_str(r->result, "value", &v, err);
        if (rc != BP_OK)
            return bp_error_prefix(err, "test driver: task %" PRIu64, index);
        const bp_bin_view *data = NULL;
        for (size_t k = 0; k < r->n_bins; k++)
            if (r->bins[k].name.len == 4 && !memcmp(r->bins[k].name.ptr, "data", 4))
                data = &r->bins[k];
        char want[65];
        double wd[4], got[4];
        test_value(index, d->seed, want, wd);
        if (i != index || v.len != 64 || memcmp(v.ptr, want, 64) || !data ||
            bp_proto_bin_copy(data, BP_WIRE_F64, got, sizeof got, NULL) != BP_OK ||
            memcmp(got, wd, sizeof got))
            return bp_error_set(err, BP_EMISMATCH,
                                "test driver: task %" PRIu64 " returned a wrong result", index);
        memcpy(d->values[index], want, 65);
    } else {
        snprintf(d->values[index], sizeof d->values[index], "noop");
    }
    d->done[index] = 1;
    d->n_done++;
    return BP_OK;
}

static int drv_finished(void *state)
{
    const tdrv *d = state;
    return d->n_done == d->n;
}

static int drv_result(void *state, char **json, bp_error *err)
{
    const tdrv *d = state;
    *json = NULL;
    if (d->n_done != d->n)
        return bp_error_set(err, BP_EINVAL, "test driver: not finished");
    size_t cap = 256 + d->n * 70;
    char *s = malloc(cap);
    if (!s)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    bp_hash h;
    bp_hash_init(&h);
    size_t at = (size_t)snprintf(s, cap, "{\"kind\":\"test\",\"tasks\":%" PRIu64 ",\"seed\":%" PRIu64
                                 ",\"values\":[", d->n, d->seed);
    for (uint64_t i = 0; i < d->n; i++) {
        at += (size_t)snprintf(s + at, cap - at, "%s\"%s\"", i ? "," : "", d->values[i]);
        bp_hash_update_str(&h, d->values[i]);
    }
    char dig[BP_HASH_HEX_LEN + 1];
    bp_hash_final_hex(&h, dig);
    snprintf(s + at, cap - at, "],\"digest\":\"%s\"}\n", dig);
    *json = s;
    return BP_OK;
}

static void drv_progress(void *state, uint64_t *done, uint64_t *total)
{
    const tdrv *d = state;
    *done = d->n_done;
    *total = d->n;
}

static void drv_destroy(void *state)
{
    tdrv *d = state;
    if (!d)
        return;
    clear_batch(d);
    free(d->done);
    free(d->values);
    free(d);
}

static const bp_job_driver_ops test_driver = {
    .kind = "test",
    .create = drv_create,
    .next = drv_next,
    .done = drv_done,
    .finished = drv_finished,
    .result = drv_result,
    .progress = drv_progress,
    .destroy = drv_destroy,
};

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* 1 if this is the first execution (creates the marker), 0 otherwise. */
static int first_time(const char *dir, const char *mode, uint64_t i)
{
    char path[PATH_CAP + 64];
    snprintf(path, sizeof path, "%s/%s.%" PRIu64, dir, mode, i);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

static int test_task(bp_task_ctx *ctx, bp_error *err)
{
    uint64_t i = 0, ms = 0, seed = 0;
    bp_str mode, cf = {0}, od = {0};
    int rc = bp_mp_get_u64(ctx->params, "i", &i, err);
    if (rc == BP_OK)
        rc = bp_mp_get_u64(ctx->params, "sleep_ms", &ms, err);
    if (rc == BP_OK)
        rc = bp_mp_get_u64(ctx->params, "seed", &seed, err);
    if (rc == BP_OK)
        rc = bp_mp_get_str(ctx->params, "mode", &mode, err);
    if (rc != BP_OK)
        return bp_error_prefix(err, "test_task params");
    if (ms > 600000)
        return bp_error_set(err, BP_EINVAL, "test_task: sleep_ms too large");
    int e1 = bp_mp_get_str(ctx->params, "count_file", &cf, NULL);
    int e2 = bp_mp_get_str(ctx->params, "once_dir", &od, NULL);
    if ((e1 && e1 != BP_ENOTFOUND) || (e2 && e2 != BP_ENOTFOUND) || cf.len >= PATH_CAP ||
        od.len >= PATH_CAP)
        return bp_error_set(err, BP_EINVAL, "test_task: bad count_file or once_dir");
    char m[8] = "";
    if (mode.len < sizeof m)
        memcpy(m, mode.ptr, mode.len), m[mode.len] = '\0';
    if (strcmp(m, "ok") && strcmp(m, "fail") && strcmp(m, "crash") && strcmp(m, "hang"))
        return bp_error_set(err, BP_EINVAL, "test_task: unknown mode");
    if (cf.ptr) {
        char path[PATH_CAP];
        memcpy(path, cf.ptr, cf.len);
        path[cf.len] = '\0';
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0) {
            char line[32];
            int n = snprintf(line, sizeof line, "%" PRIu64 "\n", i);
            /* one write with O_APPEND: lines from concurrent workers never mix */
            if (write(fd, line, (size_t)n) != n) {
            }
            close(fd);
        }
    }
    if (od.ptr && (!strcmp(m, "crash") || !strcmp(m, "hang"))) {
        char dir[PATH_CAP];
        memcpy(dir, od.ptr, od.len);
        dir[od.len] = '\0';
        if (!first_time(dir, m, i))
            snprintf(m, sizeof m, "ok");
    }
    if (!strcmp(m, "crash")) {
        raise(SIGKILL);
        _exit(137);
    }
    if (!strcmp(m, "hang"))
        for (;;) /* a stuck computation: no progress, socket still alive */
            sleep_ms(10);
    for (uint64_t k = 0; k < ms; k++) {
        sleep_ms(1);
        atomic_fetch_add(ctx->progress, 1);
    }
    if (!strcmp(m, "fail"))
        return bp_error_set(err, BP_EINVAL, "test task %" PRIu64 " fails on purpose", i);
    char value[65];
    double data[4];
    test_value(i, seed, value, data);
    msgpack_pack_map(ctx->result, 2);
    pack_str(ctx->result, "i");
    msgpack_pack_uint64(ctx->result, i);
    pack_str(ctx->result, "value");
    pack_str(ctx->result, value);
    return bp_task_add_bin(ctx, "data", BP_WIRE_F64, data, 4, err);
}

static int noop_task(bp_task_ctx *ctx, bp_error *err)
{
    (void)err;
    msgpack_pack_map(ctx->result, 0);
    return BP_OK;
}

int bp_runtime_register_test_kinds(void)
{
    int rc = bp_task_register("test_task", test_task);
    if (rc == BP_OK)
        rc = bp_task_register("noop", noop_task);
    if (rc == BP_OK)
        rc = bp_job_driver_register(&test_driver);
    return rc;
}

static void register_once(void)
{
    bp_job_register_tasks();
    const char *e = getenv("BITPLAN_TEST_KINDS");
    if (e && !strcmp(e, "1"))
        (void)bp_runtime_register_test_kinds();
}

int bp_runtime_register_kinds(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_once);
    return BP_OK;
}
