/* Helpers shared by the files of optimizer/plan/ (not public). */
#ifndef BITPLAN_PLAN_INTERNAL_H
#define BITPLAN_PLAN_INTERNAL_H

#include <stdio.h>

#include "bitplan/error.h"

/* Crash-safe file replacement: bp__atomic_open creates a temporary file next
 * to path; the caller writes through *fp; bp__atomic_commit flushes, fsyncs,
 * closes and renames it over path (or removes it when ok == 0 or anything
 * fails). A reader never sees a half-written file under path. */
typedef struct bp__atomic_file {
    FILE *fp;
    char *tmp_path;   /* owned */
    const char *path; /* the caller's, not owned */
} bp__atomic_file;

int bp__atomic_open(bp__atomic_file *af, const char *path, bp_error *err);
int bp__atomic_commit(bp__atomic_file *af, int ok, bp_error *err);

/* 1 when s contains a byte < 0x20 or 0x7f. */
int bp__has_control(const char *s);

#endif
