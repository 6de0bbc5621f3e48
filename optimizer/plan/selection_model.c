/* bp_selection_build over an open model (kept apart from selection.c so a
 * caller of bp_selection_build_list does not link the model reader). */
#include "bitplan/selection.h"

#include <stdlib.h>

int bp_selection_build(const bp_model *model, const bp_rules *rules,
                       const bp_format *menu, size_t n_menu, bp_selection **out,
                       bp_error *err)
{
    if (out)
        *out = NULL;
    if (!model)
        return bp_error_set(err, BP_EINVAL, "bp_selection_build: NULL model");
    size_t n = bp_model_count(model);
    const bp_tensor_info **list = malloc((n ? n : 1) * sizeof *list);
    if (!list)
        return bp_error_set(err, BP_ENOMEM, "selection: out of memory");
    for (size_t i = 0; i < n; i++)
        list[i] = bp_model_tensor(model, i);
    int rc = bp_selection_build_list(list, n, rules, menu, n_menu, out, err);
    if (rc)
        bp_error_prefix(err, "%s", bp_model_dir(model));
    free(list);
    return rc;
}
