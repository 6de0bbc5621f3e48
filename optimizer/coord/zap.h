/* bitplan coord: ZAP handler (not public; see zap.c). */
#ifndef BITPLAN_COORD_ZAP_H
#define BITPLAN_COORD_ZAP_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"

typedef struct bp__zap bp__zap;

/* Load the allow-list (one Z85 public key per line, '#' comments; an empty
 * or malformed list is an error) and bind inproc://zeromq.zap.01 in zctx.
 * Must run before any CURVE socket of zctx is bound. */
int bp__zap_open(void *zctx, const char *allow_file, bp__zap **out, bp_error *err);
void *bp__zap_socket(bp__zap *z);
/* Answer one queued ZAP request. Returns 1 admitted, 0 refused, -1 if none
 * was queued. user gets the admitted key (Z85). */
int bp__zap_handle(bp__zap *z, char *user, size_t user_cap);
void bp__zap_close(bp__zap **p);

#endif
