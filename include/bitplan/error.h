/* bitplan: error codes and the error record every fallible call fills.
 *
 * Every function that can fail returns an int status: 0 (BP_OK) on success or
 * a negative BP_E* code. Callers that want detail pass a bp_error*, which holds
 * the code and a message naming the failing input ("model.safetensors: tensor
 * 'x': offsets overlap 'y'"). A NULL bp_error* is always accepted.
 */
#ifndef BITPLAN_ERROR_H
#define BITPLAN_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One table, so names, values and messages cannot drift apart. */
#define BP_ERROR_MAP(X)                                                  \
    X(BP_OK, 0, "ok")                                                    \
    X(BP_EINVAL, -1, "invalid argument")                                 \
    X(BP_EIO, -2, "input/output error")                                  \
    X(BP_EFORMAT, -3, "malformed input")                                 \
    X(BP_ENOMEM, -4, "out of memory")                                    \
    X(BP_EUNSUPPORTED, -5, "unsupported")                                \
    X(BP_EINFEASIBLE, -6, "infeasible")                                  \
    X(BP_ESOLVER, -7, "solver failure")                                  \
    X(BP_ETIMEOUT, -8, "time limit reached")                             \
    X(BP_ENOTFOUND, -9, "not found")                                     \
    X(BP_EMISMATCH, -10, "mismatch")                                     \
    X(BP_ECANCELED, -11, "canceled")                                     \
    X(BP_EPROTO, -12, "protocol error")

enum {
#define BP_ERROR_ENUM(name, value, text) name = value,
    BP_ERROR_MAP(BP_ERROR_ENUM)
#undef BP_ERROR_ENUM
};

#define BP_ERROR_MSG_MAX 1024

typedef struct bp_error {
    int code;                    /* BP_OK or a BP_E* code */
    char msg[BP_ERROR_MSG_MAX];  /* human-readable, names the failing input */
} bp_error;

/* Reset to BP_OK with an empty message. NULL is accepted. */
void bp_error_clear(bp_error *err);

/* Record code and a printf-style message; returns code so callers can write
 * `return bp_error_set(err, BP_EINVAL, "...")`. NULL err is accepted. */
int bp_error_set(bp_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepend context to an existing message: "ctx: old message". Returns
 * err->code (or BP_EINVAL if err is NULL). */
int bp_error_prefix(bp_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Static text for a code ("malformed input"); never NULL. */
const char *bp_strerror(int code);

/* Symbolic name for a code ("BP_EFORMAT"); never NULL. */
const char *bp_error_name(int code);

#ifdef __cplusplus
}
#endif
#endif
