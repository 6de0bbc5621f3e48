/* bitplan: structural pre-validation of untrusted msgpack frames.
 *
 * msgpack-c allocates container storage as soon as it reads a header, before
 * any element arrives (an array32 header claiming 2^32-1 elements asks for
 * ~96 GiB), returns NOMEM for deep nesting and accepts trailing bytes. So
 * every frame from the network first passes this iterative, non-allocating
 * walk, which bounds what the real decoder can be asked to allocate:
 *   - every header fits in the remaining bytes; 0xc1 (never used) rejected;
 *   - str/bin/ext payload lengths <= remaining bytes;
 *   - an array of n needs n <= remaining bytes, a map of n needs 2n;
 *   - nesting depth <= max_depth, total nodes <= max_nodes;
 *   - ext types rejected (bitplan defines none);
 *   - exactly one object, ending at the frame's last byte.
 * Linear time, constant memory.
 */
#ifndef BITPLAN_WIRE_CHECK_H
#define BITPLAN_WIRE_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_WIRE_MAX_DEPTH 8
#define BP_WIRE_MAX_NODES 65536

typedef struct bp_wire_limits {
    int max_depth;      /* containers nested deeper than this are rejected */
    size_t max_nodes;   /* objects of any kind, containers included */
} bp_wire_limits;

/* Returns BP_OK, or BP_EPROTO with a message giving the byte offset and the
 * reason. limits may be NULL for the defaults above. */
int bp_wire_check(const uint8_t *buf, size_t len, const bp_wire_limits *limits,
                  bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
