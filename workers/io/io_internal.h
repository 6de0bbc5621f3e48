/* bitplan io: helpers shared between the files of workers/io (not public). */
#ifndef BITPLAN_IO_INTERNAL_H
#define BITPLAN_IO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/model.h"

/* Names in error messages are cut to this many bytes so the reason that
 * follows them always fits in a bp_error message. */
#define BP__NAME_SHOWN 200

/* Read a whole (small) file into a NUL-terminated buffer the caller frees.
 * BP_ENOTFOUND when it does not exist, BP_EFORMAT when it is not a regular
 * file or longer than max_bytes, BP_EIO on read errors. */
int bp__read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                  bp_error *err);

/* dir + "/" + name, malloc'd; NULL when out of memory. */
char *bp__path_join(const char *dir, const char *name);

/* 1 when name is a dtype string the safetensors format defines (whether or
 * not bitplan reads it), so messages can tell "unsupported" from "unknown". */
int bp__st_dtype_is_known(const char *name);

/* Elements of a shape (1 for ndim 0); BP_EFORMAT on overflow or a negative
 * dimension. *nbytes = numel * dtype size, also overflow-checked. */
int bp__shape_numel(int ndim, const int64_t *shape, size_t esize, uint64_t *numel,
                    uint64_t *nbytes);

#endif
