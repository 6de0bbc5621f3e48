/* The task-kind and job-driver registries. Registration happens at start-up
 * from the main thread; lookups are read-only afterwards. */
#include "bitplan/task.h"

#include <stdlib.h>
#include <string.h>

#define MAX_KINDS 64

static struct {
    char kind[BP_TASK_KIND_MAX];
    bp_task_fn fn;
} task_kinds[MAX_KINDS];
static size_t n_task_kinds;

static const bp_job_driver_ops *drivers[MAX_KINDS];
static size_t n_drivers;

int bp_task_register(const char *kind, bp_task_fn fn)
{
    if (!kind || !fn || strlen(kind) >= BP_TASK_KIND_MAX)
        return BP_EINVAL;
    for (size_t i = 0; i < n_task_kinds; i++)
        if (!strcmp(task_kinds[i].kind, kind)) {
            task_kinds[i].fn = fn;
            return BP_OK;
        }
    if (n_task_kinds >= MAX_KINDS)
        return BP_ENOMEM;
    strcpy(task_kinds[n_task_kinds].kind, kind);
    task_kinds[n_task_kinds++].fn = fn;
    return BP_OK;
}

bp_task_fn bp_task_lookup(const char *kind)
{
    for (size_t i = 0; kind && i < n_task_kinds; i++)
        if (!strcmp(task_kinds[i].kind, kind))
            return task_kinds[i].fn;
    return NULL;
}

int bp_job_driver_register(const bp_job_driver_ops *ops)
{
    if (!ops || !ops->kind)
        return BP_EINVAL;
    for (size_t i = 0; i < n_drivers; i++)
        if (!strcmp(drivers[i]->kind, ops->kind)) {
            drivers[i] = ops;
            return BP_OK;
        }
    if (n_drivers >= MAX_KINDS)
        return BP_ENOMEM;
    drivers[n_drivers++] = ops;
    return BP_OK;
}

const bp_job_driver_ops *bp_job_driver_lookup(const char *kind)
{
    for (size_t i = 0; kind && i < n_drivers; i++)
        if (!strcmp(drivers[i]->kind, kind))
            return drivers[i];
    return NULL;
}

int bp_task_add_bin(bp_task_ctx *ctx, const char *name, bp_wire_dtype dtype,
                    const void *data, uint64_t count, bp_error *err)
{
    if (ctx->n_out_bins >= BP_PROTO_MAX_BIN)
        return bp_error_set(err, BP_EINVAL, "task: more than %d binary outputs", BP_PROTO_MAX_BIN);
    size_t esz = bp_wire_dtype_size(dtype);
    if (!esz || !name || strlen(name) >= sizeof ctx->out_bins[0].name)
        return bp_error_set(err, BP_EINVAL, "task: bad binary output");
    if (count > SIZE_MAX / esz)
        return bp_error_set(err, BP_EINVAL, "task: binary output too large");
    bp_task_bin *b = &ctx->out_bins[ctx->n_out_bins];
    size_t nbytes = (size_t)count * esz;
    b->data = malloc(nbytes ? nbytes : 1);
    if (!b->data)
        return bp_error_set(err, BP_ENOMEM, "task: out of memory");
    if (count)
        memcpy(b->data, data, count * esz);
    strcpy(b->name, name);
    b->dtype = dtype;
    b->count = count;
    ctx->n_out_bins++;
    return BP_OK;
}

void bp_task_ctx_free_bins(bp_task_ctx *ctx)
{
    for (size_t i = 0; i < ctx->n_out_bins; i++) {
        free(ctx->out_bins[i].data);
        ctx->out_bins[i].data = NULL;
    }
    ctx->n_out_bins = 0;
}
