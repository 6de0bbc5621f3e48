/* Running a job's tasks in this process, through the same serialized
 * params and results that cross the wire. */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/progress.h"
#include "bitplan/task.h"

static int run_one(const bp_task_req *req, const bp_job_driver_ops *ops, void *state, bp_error *err)
{
    bp_task_fn fn = bp_task_lookup(req->kind);
    if (!fn)
        return bp_error_set(err, BP_EINVAL, "no task kind '%s'", req->kind);
    msgpack_unpacked params, result;
    msgpack_unpacked_init(&params);
    msgpack_unpacked_init(&result);
    msgpack_sbuffer rbuf;
    msgpack_sbuffer_init(&rbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &rbuf, msgpack_sbuffer_write);
    _Atomic uint64_t progress = 0;
    bp_task_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    int rc = BP_OK;
    size_t off = 0;
    if (msgpack_unpack_next(&params, req->params_mp, req->params_len, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != req->params_len || params.data.type != MSGPACK_OBJECT_MAP) {
        rc = bp_error_set(err, BP_EPROTO, "task %llu: params are not one msgpack map",
                          (unsigned long long)req->index);
        goto out;
    }
    ctx.params = &params.data;
    ctx.bins = req->bins;
    ctx.n_bins = req->n_bins;
    ctx.threads = 0;
    ctx.progress = &progress;
    ctx.result = &pk;
    if ((rc = fn(&ctx, err)) != BP_OK)
        goto out;
    off = 0;
    if (msgpack_unpack_next(&result, rbuf.data, rbuf.size, &off) != MSGPACK_UNPACK_SUCCESS || off != rbuf.size) {
        rc = bp_error_set(err, BP_EPROTO, "task %llu (%s): result is not one msgpack object",
                          (unsigned long long)req->index, req->kind);
        goto out;
    }
    bp_bin_view views[BP_PROTO_MAX_BIN];
    for (size_t i = 0; i < ctx.n_out_bins; i++) {
        views[i].name = bp_str_c(ctx.out_bins[i].name);
        views[i].dtype = ctx.out_bins[i].dtype;
        views[i].count = ctx.out_bins[i].count;
        views[i].data = ctx.out_bins[i].data;
        views[i].size = ctx.out_bins[i].count * bp_wire_dtype_size(ctx.out_bins[i].dtype);
    }
    bp_task_result r = {&result.data, views, ctx.n_out_bins};
    rc = ops->done(state, req->index, &r, err);
out:
    bp_task_ctx_free_bins(&ctx);
    msgpack_sbuffer_destroy(&rbuf);
    msgpack_unpacked_destroy(&params);
    msgpack_unpacked_destroy(&result);
    return rc;
}

static int spec_kind(const char *json, size_t len, char *kind, size_t cap)
{
    /* The kind is read by the driver's own parser too; here only enough to
     * pick the driver. Default "plan". */
    const char *p = memmem(json, len, "\"kind\"", 6);
    snprintf(kind, cap, "plan");
    if (!p)
        return 0;
    p += 6;
    const char *end = json + len;
    while (p < end && (*p == ' ' || *p == ':' || *p == '\n' || *p == '\t' || *p == '\r'))
        p++;
    if (p >= end || *p != '"')
        return -1;
    p++;
    size_t n = 0;
    while (p + n < end && p[n] != '"' && n + 1 < cap)
        n++;
    memcpy(kind, p, n);
    kind[n] = '\0';
    return 0;
}

int bp_job_run_local(const char *spec_json, size_t len, int quiet, char **result_json, bp_error *err)
{
    *result_json = NULL;
    char kind[BP_TASK_KIND_MAX];
    spec_kind(spec_json, len, kind, sizeof kind);
    const bp_job_driver_ops *ops = bp_job_driver_lookup(kind);
    if (!ops)
        return bp_error_set(err, BP_EINVAL, "job spec: unknown kind '%s'", kind);
    void *state = NULL;
    int rc = ops->create(spec_json, len, &state, err);
    if (rc != BP_OK)
        return rc;
    bp_progress *prog = bp_progress_new("tasks", 1, quiet);
    while (!ops->finished(state)) {
        const bp_task_req *reqs = NULL;
        size_t n = 0;
        if ((rc = ops->next(state, &reqs, &n, err)) != BP_OK)
            break;
        if (n == 0) {
            rc = bp_error_set(err, BP_EINVAL, "job driver '%s' stalled: no tasks and not finished", kind);
            break;
        }
        /* Copy: done() may invalidate the driver's request array. */
        bp_task_req *copy = malloc(n * sizeof *copy);
        if (!copy) {
            rc = bp_error_set(err, BP_ENOMEM, "out of memory");
            break;
        }
        memcpy(copy, reqs, n * sizeof *copy);
        for (size_t i = 0; i < n && rc == BP_OK; i++) {
            rc = run_one(&copy[i], ops, state, err);
            uint64_t done = 0, total = 0;
            ops->progress(state, &done, &total);
            bp_progress_set(prog, done, total);
        }
        free(copy);
        if (rc != BP_OK)
            break;
    }
    if (rc == BP_OK) {
        bp_progress_done(prog);
        rc = ops->result(state, result_json, err);
    }
    bp_progress_destroy(&prog);
    ops->destroy(state);
    return rc;
}
