/* bitplan: the tensors a job quantizes and the formats each may take.
 *
 * Combines the model's tensor list, the rules (rules.h) and the job's format
 * menu. For every tensor the rules include, the allowed formats are the
 * menu entries that
 *   - appear in the rule's `formats` list (when it has one),
 *   - have nominal bits per weight >= the rule's `min_bits`,
 *   - can store the tensor's shape (bp_format_supports),
 * in menu order; a pinned tensor gets exactly its pin instead (which must
 * support its shape, but need not be in the menu). A selected tensor left
 * with no allowed format is an error naming it and the reason.
 */
#ifndef BITPLAN_SELECTION_H
#define BITPLAN_SELECTION_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/format.h"
#include "bitplan/model.h"
#include "bitplan/rules.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_selected_tensor {
    char *name;            /* owned by the selection */
    size_t source_index;   /* index in the input list (model: bp_model_tensor) */
    bp_dtype dtype;        /* source dtype */
    int64_t rows, cols;    /* shape[0], shape[1] */
    uint64_t params;       /* rows * cols */
    bp_format *formats;    /* allowed formats, menu order; owned */
    size_t n_formats;      /* >= 1 */
    int pinned;            /* 1: formats is the single pinned format */
} bp_selected_tensor;

typedef struct bp_selection {
    bp_selected_tensor *tensors; /* in input order (a model's: by name) */
    size_t n;
    uint64_t total_params;       /* sum of params */
    size_t n_rules;
    size_t *rule_hits;           /* per rule: tensors it matched (any ndim);
                                    0 flags a rule that matches nothing */
} bp_selection;

/* Build from a list of tensor descriptions (only name, dtype, ndim and
 * shape are read). rules NULL = default selection. menu: the job's formats
 * (n_menu >= 1). Caller owns *out (bp_selection_destroy); NULL on failure.
 * BP_EINVAL naming the tensor: unsupported pin, no allowed format, shape
 * not positive; BP_ENOMEM. */
int bp_selection_build_list(const bp_tensor_info *const *tensors, size_t n,
                            const bp_rules *rules, const bp_format *menu,
                            size_t n_menu, bp_selection **out, bp_error *err);

/* Same over every tensor of an open model (in bp_model_tensor order). */
int bp_selection_build(const bp_model *model, const bp_rules *rules,
                       const bp_format *menu, size_t n_menu, bp_selection **out,
                       bp_error *err);

void bp_selection_destroy(bp_selection **s);

/* Index of the selected tensor with this name, or -1. */
long bp_selection_find(const bp_selection *s, const char *name);

#ifdef __cplusplus
}
#endif
#endif
