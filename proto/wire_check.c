#include "bitplan/wire_check.h"

/* Big-endian reads; the caller has checked the bytes exist. */
static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* One entry per open container: how many child objects it still expects. */
typedef struct {
    uint64_t remaining;
} frame;

int bp_wire_check(const uint8_t *buf, size_t len, const bp_wire_limits *limits,
                  bp_error *err)
{
    int max_depth = limits && limits->max_depth > 0 ? limits->max_depth : BP_WIRE_MAX_DEPTH;
    size_t max_nodes = limits && limits->max_nodes > 0 ? limits->max_nodes : BP_WIRE_MAX_NODES;
    if (max_depth > 64)
        max_depth = 64;
    frame stack[64];
    int depth = 0;
    size_t nodes = 0;
    size_t pos = 0;

    if (!buf && len)
        return bp_error_set(err, BP_EINVAL, "frame: NULL buffer");
    if (len == 0)
        return bp_error_set(err, BP_EPROTO, "frame: empty");

    for (;;) {
        if (pos >= len)
            return bp_error_set(err, BP_EPROTO, "frame: truncated at byte %zu", pos);
        if (++nodes > max_nodes)
            return bp_error_set(err, BP_EPROTO, "frame: more than %zu objects", max_nodes);
        size_t left = len - pos;
        uint8_t t = buf[pos];
        size_t header = 1;     /* bytes of type + length fields */
        uint64_t payload = 0;  /* bytes of str/bin/ext data or fixed-size value */
        uint64_t children = 0; /* array elements or 2 x map entries */
        int container = 0;

        if (t <= 0x7f || t >= 0xe0) {
            /* positive or negative fixint */
        } else if (t >= 0x80 && t <= 0x8f) {
            children = 2u * (t & 0x0f);
            container = 1;
        } else if (t >= 0x90 && t <= 0x9f) {
            children = t & 0x0f;
            container = 1;
        } else if (t >= 0xa0 && t <= 0xbf) {
            payload = t & 0x1f;
        } else {
            switch (t) {
            case 0xc0: case 0xc2: case 0xc3: break;            /* nil, false, true */
            case 0xc1:
                return bp_error_set(err, BP_EPROTO, "frame: reserved type 0xc1 at byte %zu", pos);
            case 0xc4: case 0xd9: header = 2; break;           /* bin8, str8 */
            case 0xc5: case 0xda: header = 3; break;           /* bin16, str16 */
            case 0xc6: case 0xdb: header = 5; break;           /* bin32, str32 */
            case 0xc7: case 0xc8: case 0xc9:
            case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
                return bp_error_set(err, BP_EPROTO, "frame: ext type at byte %zu is not allowed", pos);
            case 0xca: payload = 4; break;                     /* float32 */
            case 0xcb: payload = 8; break;                     /* float64 */
            case 0xcc: case 0xd0: payload = 1; break;
            case 0xcd: case 0xd1: payload = 2; break;
            case 0xce: case 0xd2: payload = 4; break;
            case 0xcf: case 0xd3: payload = 8; break;
            case 0xdc: header = 3; container = 1; break;       /* array16 */
            case 0xdd: header = 5; container = 1; break;       /* array32 */
            case 0xde: header = 3; container = 2; break;       /* map16 */
            case 0xdf: header = 5; container = 2; break;       /* map32 */
            default:
                return bp_error_set(err, BP_EPROTO, "frame: unknown type 0x%02x at byte %zu", t, pos);
            }
        }
        if (header > left)
            return bp_error_set(err, BP_EPROTO, "frame: header of type 0x%02x at byte %zu is truncated", t, pos);
        if (header > 1) {
            uint64_t n = be(buf + pos + 1, (int)header - 1);
            if (container == 1)
                children = n;
            else if (container == 2)
                children = 2 * n; /* n < 2^32, so no overflow */
            else
                payload = n;
        }
        if (container == 2)
            container = 1;
        pos += header;
        left = len - pos;
        if (payload > left)
            return bp_error_set(err, BP_EPROTO,
                                "frame: object at byte %zu declares %llu bytes but %zu remain",
                                pos - header, (unsigned long long)payload, left);
        pos += (size_t)payload;

        if (container && children > 0) {
            /* Every child needs at least one byte. */
            if (children > len - pos)
                return bp_error_set(err, BP_EPROTO,
                                    "frame: container at byte %zu declares %llu objects but %zu bytes remain",
                                    pos - header, (unsigned long long)children, len - pos);
            if (depth >= max_depth)
                return bp_error_set(err, BP_EPROTO, "frame: nesting deeper than %d at byte %zu",
                                    max_depth, pos - header);
            stack[depth++].remaining = children;
            continue;
        }
        /* A leaf (or empty container) finished: pop completed containers. */
        while (depth > 0) {
            if (--stack[depth - 1].remaining > 0)
                break;
            depth--;
        }
        if (depth == 0)
            break;
    }
    if (pos != len)
        return bp_error_set(err, BP_EPROTO, "frame: %zu trailing bytes after the object", len - pos);
    return BP_OK;
}
