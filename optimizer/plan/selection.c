/* Tensor selection: rules x model x format menu (see selection.h). The
 * model-facing wrapper lives in selection_model.c so this file needs no
 * model reader. */
#include "bitplan/selection.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void bp_selection_destroy(bp_selection **sp)
{
    if (!sp || !*sp)
        return;
    bp_selection *s = *sp;
    for (size_t i = 0; i < s->n; i++) {
        free(s->tensors[i].name);
        free(s->tensors[i].formats);
    }
    free(s->tensors);
    free(s->rule_hits);
    free(s);
    *sp = NULL;
}

long bp_selection_find(const bp_selection *s, const char *name)
{
    if (!s || !name)
        return -1;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->tensors[i].name, name) == 0)
            return (long)i;
    return -1;
}

static int in_list(const char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return 1;
    return 0;
}

/* Fills t->formats for one included tensor. */
static int allowed_formats(const bp_tensor_info *ti, const bp_rule_result *rr,
                           const bp_format *menu, size_t n_menu, bp_selected_tensor *t,
                           bp_error *err)
{
    if (rr->pin) {
        bp_format f;
        bp_error fe;
        if (bp_format_parse(rr->pin, &f, &fe) != BP_OK)
            return bp_error_set(err, BP_EINVAL, "tensor \"%s\": pin \"%s\": %s", ti->name,
                                rr->pin, fe.msg);
        if (!bp_format_supports(&f, t->rows, t->cols))
            return bp_error_set(err, BP_EINVAL,
                                "tensor \"%s\" [%" PRId64 ", %" PRId64
                                "]: pinned format %s does not support this shape",
                                ti->name, t->rows, t->cols, f.name);
        t->formats = malloc(sizeof *t->formats);
        if (!t->formats)
            return bp_error_set(err, BP_ENOMEM, "selection: out of memory");
        t->formats[0] = f;
        t->n_formats = 1;
        t->pinned = 1;
        return BP_OK;
    }
    t->formats = malloc(n_menu * sizeof *t->formats);
    if (!t->formats)
        return bp_error_set(err, BP_ENOMEM, "selection: out of memory");
    size_t by_rule = 0, by_bits = 0;
    for (size_t k = 0; k < n_menu; k++) {
        const bp_format *f = &menu[k];
        if (rr->formats && !in_list(rr->formats, rr->n_formats, f->name))
            continue;
        by_rule++;
        if (bp_format_nominal_bpw(f) < rr->min_bits)
            continue;
        by_bits++;
        if (!bp_format_supports(f, t->rows, t->cols))
            continue;
        t->formats[t->n_formats++] = *f;
    }
    if (t->n_formats)
        return BP_OK;
    if (!by_rule)
        return bp_error_set(err, BP_EINVAL,
                            "tensor \"%s\": no format of the job's menu is in its rule's "
                            "\"formats\" list",
                            ti->name);
    if (!by_bits)
        return bp_error_set(err, BP_EINVAL,
                            "tensor \"%s\": every allowed format has fewer than min_bits "
                            "%g bits per weight",
                            ti->name, rr->min_bits);
    return bp_error_set(err, BP_EINVAL,
                        "tensor \"%s\" [%" PRId64 ", %" PRId64
                        "]: no allowed format supports this shape",
                        ti->name, t->rows, t->cols);
}

int bp_selection_build_list(const bp_tensor_info *const *tensors, size_t n,
                            const bp_rules *rules, const bp_format *menu,
                            size_t n_menu, bp_selection **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_selection_build: NULL out");
    *out = NULL;
    if ((n && !tensors) || !menu || n_menu == 0)
        return bp_error_set(err, BP_EINVAL, "selection: empty format menu");
    int rc = BP_OK;
    bp_selection *s = calloc(1, sizeof *s);
    if (!s)
        return bp_error_set(err, BP_ENOMEM, "selection: out of memory");
    s->n_rules = bp_rules_count(rules);
    s->tensors = calloc(n ? n : 1, sizeof *s->tensors);
    s->rule_hits = calloc(s->n_rules ? s->n_rules : 1, sizeof *s->rule_hits);
    if (!s->tensors || !s->rule_hits) {
        rc = bp_error_set(err, BP_ENOMEM, "selection: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const bp_tensor_info *ti = tensors[i];
        if (!ti || !ti->name) {
            rc = bp_error_set(err, BP_EINVAL, "selection: tensor %zu has no name", i);
            goto out;
        }
        for (size_t k = 0; k < s->n_rules; k++)
            s->rule_hits[k] += (size_t)bp_rules_rule_matches(rules, k, ti->name);
        bp_rule_result rr;
        bp_rules_resolve(rules, ti->name, ti->ndim, &rr);
        if (!rr.include)
            continue;
        bp_selected_tensor *t = &s->tensors[s->n];
        t->rows = ti->shape[0];
        t->cols = ti->shape[1];
        if (t->rows <= 0 || t->cols <= 0) {
            rc = bp_error_set(err, BP_EINVAL, "tensor \"%s\": empty shape [%" PRId64
                              ", %" PRId64 "]", ti->name, t->rows, t->cols);
            goto out;
        }
        t->name = strdup(ti->name);
        if (!t->name) {
            rc = bp_error_set(err, BP_ENOMEM, "selection: out of memory");
            goto out;
        }
        s->n++; /* from here destroy frees it */
        t->source_index = i;
        t->dtype = ti->dtype;
        t->params = (uint64_t)t->rows * (uint64_t)t->cols;
        if ((rc = allowed_formats(ti, &rr, menu, n_menu, t, err)))
            goto out;
        s->total_params += t->params;
    }
out:
    if (rc)
        bp_selection_destroy(&s);
    else
        *out = s;
    return rc;
}
