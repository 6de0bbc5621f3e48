/* bitplan proto: helpers shared between the module's files (not public). */
#ifndef BITPLAN_PROTO_INTERNAL_H
#define BITPLAN_PROTO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "bitplan/proto.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bitplan's wire format carries raw little-endian arrays; add byte swapping for this host"
#endif

/* Limits with every 0 field replaced by its default and ceilings applied. */
void bp__proto_limits_resolve(const bp_proto_limits *in, bp_proto_limits *out);

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF) without U+0000. */
bool bp__utf8_ok(const char *s, size_t len);

/* Printable rendering of untrusted bytes for error messages: at most 40
 * source bytes, non-printable bytes as \xNN, "..." when cut. Returns buf. */
const char *bp__show(const char *s, size_t len, char *buf, size_t cap);
#define BP__SHOW_CAP 176

/* msgpack type name for messages ("map", "negative integer", ...). */
const char *bp__mp_type_name(int type);

#endif
