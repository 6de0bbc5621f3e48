/* bitplan: Hugging Face model directories and safetensors files, read through
 * mmap.
 *
 * A model directory holds config.json plus either model.safetensors or the
 * shards listed in model.safetensors.index.json. Every shard is mapped
 * read-only; tensor data is never copied as a whole. Readers convert row
 * ranges of a tensor to float on demand, so a 140 GB model can be processed
 * on a machine with far less memory.
 *
 * Every malformed input is rejected with BP_EFORMAT (or BP_EUNSUPPORTED for a
 * dtype bitplan does not read, BP_ENOTFOUND for a missing file) and a message
 * that names the file, the tensor when there is one, and the reason.
 */
#ifndef BITPLAN_MODEL_H
#define BITPLAN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/half.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_MAX_DIMS 8

typedef enum bp_dtype {
    BP_DTYPE_F32 = 0,
    BP_DTYPE_F16,
    BP_DTYPE_BF16,
    BP_DTYPE_U8,   /* written by `apply` for packed tensors; not readable as f32 */
    BP_DTYPE_I32,  /* read only as raw bytes */
    BP_DTYPE_F64,  /* stats files may use it */
    BP_DTYPE_UNKNOWN
} bp_dtype;

/* "F32", "F16", "BF16", "U8", "I32", "F64". */
const char *bp_dtype_name(bp_dtype d);
/* Bytes per element; 0 for BP_DTYPE_UNKNOWN. */
size_t bp_dtype_size(bp_dtype d);
/* BP_DTYPE_UNKNOWN when the safetensors dtype string is not one of the above. */
bp_dtype bp_dtype_from_name(const char *name);

typedef struct bp_tensor_info {
    char *name;                 /* owned by the file/model */
    bp_dtype dtype;
    int ndim;
    int64_t shape[BP_MAX_DIMS];
    uint64_t numel;             /* product of shape (1 for a scalar) */
    uint64_t nbytes;            /* numel * dtype size, equal to the byte span */
    const void *data;           /* into the mmap; valid while the owner lives */
    const char *file;           /* path of the file holding it */
} bp_tensor_info;

/* --- one safetensors file --------------------------------------------- */

typedef struct bp_safetensors bp_safetensors;

/* Map and validate a safetensors file: header length within the file,
 * valid JSON, known dtypes, shape * dtype size == byte span, offsets in
 * range, no overlaps, no duplicate names. Caller owns *out. */
int bp_safetensors_open(const char *path, bp_safetensors **out, bp_error *err);
void bp_safetensors_destroy(bp_safetensors **f);
size_t bp_safetensors_count(const bp_safetensors *f);
/* Tensors are in data-offset order. NULL when i is out of range. */
const bp_tensor_info *bp_safetensors_tensor(const bp_safetensors *f, size_t i);
const bp_tensor_info *bp_safetensors_find(const bp_safetensors *f, const char *name);
/* Value of a "__metadata__" string entry, or NULL. */
const char *bp_safetensors_metadata(const bp_safetensors *f, const char *key);

/* --- streaming writer ---------------------------------------------------
 * The header needs every tensor's size up front, so declare all tensors,
 * then write each tensor's bytes in declaration order (in one or several
 * bp_st_writer_write calls). bp_st_writer_finish checks that every declared
 * byte was written and renames the temporary file into place, so a failed
 * run never leaves a truncated file under the final name. */

typedef struct bp_st_writer bp_st_writer;

int bp_st_writer_new(const char *path, bp_st_writer **out, bp_error *err);
int bp_st_writer_metadata(bp_st_writer *w, const char *key, const char *value,
                          bp_error *err);
int bp_st_writer_declare(bp_st_writer *w, const char *name, bp_dtype dtype,
                         int ndim, const int64_t *shape, bp_error *err);
int bp_st_writer_write(bp_st_writer *w, const void *data, size_t len, bp_error *err);
int bp_st_writer_finish(bp_st_writer *w, bp_error *err);
/* Discards an unfinished file. */
void bp_st_writer_destroy(bp_st_writer **w);

/* --- a model directory -------------------------------------------------- */

typedef struct bp_model bp_model;

/* Open config.json and model.safetensors, or the shards listed in
 * model.safetensors.index.json (every listed shard must exist and hold
 * exactly the tensors the index maps to it). Caller owns *out. */
int bp_model_open(const char *dir, bp_model **out, bp_error *err);
void bp_model_destroy(bp_model **m);

const char *bp_model_dir(const bp_model *m);
/* The raw text of config.json (NUL-terminated). */
const char *bp_model_config_text(const bp_model *m);
size_t bp_model_count(const bp_model *m);
/* Tensors sorted by name (byte order), so indices are stable across runs. */
const bp_tensor_info *bp_model_tensor(const bp_model *m, size_t i);
/* Index of a tensor by name, or -1. */
long bp_model_find(const bp_model *m, const char *name);
/* Sum of nbytes over all tensors. */
uint64_t bp_model_total_bytes(const bp_model *m);

/* Content hash over every tensor's name, dtype, shape and bytes (in name
 * order) plus config.json. Reads all data once; parallel over tensors.
 * out holds BP_HASH_HEX_LEN + 1 bytes (see hash.h). */
int bp_model_content_hash(const bp_model *m, char *out, bp_error *err);

/* --- conversion ---------------------------------------------------------- */

/* Rows [row0, row0+nrows) of a tensor seen as a matrix of shape[0] rows by
 * numel/shape[0] columns (a 1-D tensor is one row), converted to float.
 * Works for F32, F16, BF16 and F64; BP_EUNSUPPORTED otherwise. */
int bp_tensor_rows_f32(const bp_tensor_info *t, int64_t row0, int64_t nrows,
                       float *out, bp_error *err);
/* Rows and columns of the matrix view above. */
int64_t bp_tensor_rows(const bp_tensor_info *t);
int64_t bp_tensor_cols(const bp_tensor_info *t);

#ifdef __cplusplus
}
#endif
#endif
