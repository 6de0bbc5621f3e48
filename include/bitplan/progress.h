/* bitplan: progress reporting on stderr for long work.
 *
 * A bp_progress prints "label  done/total  pct  rate  ETA" at most a few times
 * a second, on one line when stderr is a terminal and as plain lines
 * otherwise. A quiet progress prints nothing. Not thread-safe: tick it from
 * the thread that owns it (kernels report through their return, not here).
 */
#ifndef BITPLAN_PROGRESS_H
#define BITPLAN_PROGRESS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_progress bp_progress;

/* Caller owns the result; destroy with bp_progress_destroy. NULL on OOM. */
bp_progress *bp_progress_new(const char *label, uint64_t total, int quiet);
void bp_progress_tick(bp_progress *p, uint64_t n);
/* Set the absolute position and total (for work whose size grows). */
void bp_progress_set(bp_progress *p, uint64_t done, uint64_t total);
/* Prints the final line (unless quiet). */
void bp_progress_done(bp_progress *p);
void bp_progress_destroy(bp_progress **p);

/* Monotonic clock in seconds, for timings and deadlines. */
double bp_now_seconds(void);

#ifdef __cplusplus
}
#endif
#endif
