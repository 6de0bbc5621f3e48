/* bitplan proto: typed accessors for the opaque maps (task params/results).
 * The decoder has already checked these maps structurally (string keys,
 * UTF-8, finite floats); here the task layer checks its own schema. */
#include <math.h>
#include <string.h>

#include "proto_internal.h"

/* BP_OK with *val (NULL if absent), BP_EPROTO if map is no map or the key is
 * duplicated. */
static int lookup(const msgpack_object *map, const char *key, const msgpack_object **val,
                  bp_error *err)
{
    *val = NULL;
    if (!map || !key)
        return bp_error_set(err, BP_EINVAL, "map lookup: NULL argument");
    if (map->type != MSGPACK_OBJECT_MAP)
        return bp_error_set(err, BP_EPROTO, "'%s': container is a %s, not a map", key,
                            bp__mp_type_name(map->type));
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size != kl ||
            memcmp(k->via.str.ptr, key, kl) != 0)
            continue;
        if (*val)
            return bp_error_set(err, BP_EPROTO, "'%s': duplicate key", key);
        *val = &map->via.map.ptr[i].val;
    }
    return BP_OK;
}

const msgpack_object *bp_mp_get(const msgpack_object *map, const char *key)
{
    const msgpack_object *v;
    if (lookup(map, key, &v, NULL) != BP_OK)
        return NULL;
    return v;
}

/* Common prologue: absent or nil -> BP_ENOTFOUND. */
static int fetch(const msgpack_object *map, const char *key, const msgpack_object **v,
                 bp_error *err)
{
    int rc = lookup(map, key, v, err);
    if (rc)
        return rc;
    if (!*v || (*v)->type == MSGPACK_OBJECT_NIL)
        return bp_error_set(err, BP_ENOTFOUND, "'%s': missing", key);
    return BP_OK;
}

static int wrong(const char *key, const char *want, const msgpack_object *v, bp_error *err)
{
    return bp_error_set(err, BP_EPROTO, "'%s': expected %s, got %s", key, want,
                        bp__mp_type_name(v->type));
}

int bp_mp_get_str(const msgpack_object *map, const char *key, bp_str *out, bp_error *err)
{
    const msgpack_object *v;
    int rc = fetch(map, key, &v, err);
    if (rc)
        return rc;
    if (v->type != MSGPACK_OBJECT_STR)
        return wrong(key, "a string", v, err);
    if (out) {
        out->ptr = v->via.str.size ? v->via.str.ptr : "";
        out->len = v->via.str.size;
    }
    return BP_OK;
}

int bp_mp_get_u64(const msgpack_object *map, const char *key, uint64_t *out, bp_error *err)
{
    const msgpack_object *v;
    int rc = fetch(map, key, &v, err);
    if (rc)
        return rc;
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return wrong(key, "an unsigned integer", v, err);
    if (out)
        *out = v->via.u64;
    return BP_OK;
}

int bp_mp_get_i64(const msgpack_object *map, const char *key, int64_t *out, bp_error *err)
{
    const msgpack_object *v;
    int rc = fetch(map, key, &v, err);
    if (rc)
        return rc;
    int64_t x;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (v->via.u64 > INT64_MAX)
            return bp_error_set(err, BP_EPROTO, "'%s': %llu exceeds the int64 range", key,
                                (unsigned long long)v->via.u64);
        x = (int64_t)v->via.u64;
    } else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        x = v->via.i64;
    } else {
        return wrong(key, "an integer", v, err);
    }
    if (out)
        *out = x;
    return BP_OK;
}

int bp_mp_get_f64(const msgpack_object *map, const char *key, double *out, bp_error *err)
{
    const msgpack_object *v;
    int rc = fetch(map, key, &v, err);
    if (rc)
        return rc;
    double d;
    if (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64)
        d = v->via.f64;
    else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        d = (double)v->via.u64;
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        d = (double)v->via.i64;
    else
        return wrong(key, "a number", v, err);
    if (!isfinite(d))
        return bp_error_set(err, BP_EPROTO, "'%s': not finite", key);
    if (out)
        *out = d;
    return BP_OK;
}

int bp_mp_get_bool(const msgpack_object *map, const char *key, bool *out, bp_error *err)
{
    const msgpack_object *v;
    int rc = fetch(map, key, &v, err);
    if (rc)
        return rc;
    if (v->type != MSGPACK_OBJECT_BOOLEAN)
        return wrong(key, "a boolean", v, err);
    if (out)
        *out = v->via.boolean;
    return BP_OK;
}

int bp_mp_get_array(const msgpack_object *map, const char *key, const msgpack_object **items,
                    size_t *n, bp_error *err)
{
    const msgpack_object *v;
    int rc = fetch(map, key, &v, err);
    if (rc)
        return rc;
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return wrong(key, "an array", v, err);
    if (items)
        *items = v->via.array.ptr;
    if (n)
        *n = v->via.array.size;
    return BP_OK;
}

int bp_mp_get_map(const msgpack_object *map, const char *key, const msgpack_object **out,
                  bp_error *err)
{
    const msgpack_object *v;
    int rc = fetch(map, key, &v, err);
    if (rc)
        return rc;
    if (v->type != MSGPACK_OBJECT_MAP)
        return wrong(key, "a map", v, err);
    if (out)
        *out = v;
    return BP_OK;
}

int bp_mp_get_bin(const msgpack_object *map, const char *key, bp_frame *out, bp_error *err)
{
    const msgpack_object *v;
    int rc = fetch(map, key, &v, err);
    if (rc)
        return rc;
    if (v->type != MSGPACK_OBJECT_BIN)
        return wrong(key, "bin", v, err);
    if (out) {
        out->data = v->via.bin.size ? v->via.bin.ptr : "";
        out->size = v->via.bin.size;
    }
    return BP_OK;
}
