/* Job spec JSON <-> bp_job_spec. */
#include "bitplan/job_spec.h"

#include "bitplan/sweep.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bp_job_spec_doc {
    json_t *root;        /* keeps every string the spec points to */
    char *formats;       /* comma-joined format list, or NULL */
    bp_job_spec spec;
};

static int fail(bp_error *err, const char *src, const char *fmt, const char *a, const char *b)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, a ? a : "", b ? b : "");
    return bp_error_set(err, BP_EINVAL, "%s: %s", src, msg);
}

static int get_str(json_t *obj, const char *key, const char **out, const char *src, bp_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return BP_OK;
    if (!json_is_string(v) || json_string_length(v) == 0 || strlen(json_string_value(v)) != json_string_length(v))
        return fail(err, src, "\"%s\" must be a non-empty string%s", key, NULL);
    *out = json_string_value(v);
    return BP_OK;
}

static int get_int(json_t *obj, const char *key, long lo, long hi, int64_t *out, const char *src, bp_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return BP_OK;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        char range[64];
        snprintf(range, sizeof range, "%ld..%ld", lo, hi);
        return fail(err, src, "\"%s\" must be an integer in %s", key, range);
    }
    *out = json_integer_value(v);
    return BP_OK;
}

static int check_keys(json_t *obj, const char *const *allowed, const char *where, const char *src, bp_error *err)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        int ok = 0;
        for (size_t i = 0; allowed[i]; i++)
            if (!strcmp(key, allowed[i]))
                ok = 1;
        if (!ok)
            return fail(err, src, "unknown key \"%s\" in %s", key, where);
    }
    return BP_OK;
}

/* Budget numbers: text is parsed exactly; a JSON number is printed with
 * the fewest digits that read back to the same double. */
static int number_text(json_t *v, char *buf, size_t cap)
{
    if (json_is_string(v)) {
        snprintf(buf, cap, "%s", json_string_value(v));
        return 0;
    }
    if (json_is_integer(v)) {
        snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
        return 0;
    }
    if (!json_is_real(v))
        return -1;
    double d = json_real_value(v);
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, d);
        if (strtod(buf, NULL) == d)
            return 0;
    }
    return 0;
}

/* "split_rows" and "split_min_weights": JSON 0 means "never split" / "any
 * size", which the struct stores as -1 because its 0 means "default". */
static int parse_split(json_t *root, bp_job_spec *s, const char *src, bp_error *err)
{
    int64_t rows = -2, weights = -2;
    int rc = get_int(root, "split_rows", 0, 1L << 40, &rows, src, err);
    if (rc != BP_OK)
        return rc;
    if (rows > 0 && rows % BP_SWEEP_CHUNK_ROWS != 0)
        return bp_error_set(err, BP_EINVAL,
                            "%s: \"split_rows\" = %lld is not a multiple of %d rows (0 = never split)", src,
                            (long long)rows, BP_SWEEP_CHUNK_ROWS);
    if ((rc = get_int(root, "split_min_weights", 0, 1L << 62, &weights, src, err)) != BP_OK)
        return rc;
    if (rows != -2)
        s->split_rows = rows ? rows : -1;
    if (weights != -2)
        s->split_min_weights = weights ? weights : -1;
    return BP_OK;
}

/* A string field that must be one of names[] (index into *out). */
static int get_enum(json_t *root, const char *key, const char *const *names, int *out, const char *src, bp_error *err)
{
    const char *v = NULL;
    int rc = get_str(root, key, &v, src, err);
    if (rc != BP_OK || !v)
        return rc;
    char list[160] = "";
    for (int i = 0; names[i]; i++) {
        if (!strcmp(v, names[i])) {
            *out = i;
            return BP_OK;
        }
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, names[i], sizeof list - strlen(list) - 1);
    }
    return bp_error_set(err, BP_EINVAL, "%s: unknown \"%s\" \"%s\" (%s)", src, key, v, list);
}

/* "evo": {"generations", "lambda", "promote", "seed", "windows"}, every
 * field optional; "generations": 0 measures the baselines only. */
static int parse_evo(json_t *root, bp_job_spec *s, const char *src, bp_error *err)
{
    json_t *e = json_object_get(root, "evo");
    if (!e || json_is_null(e))
        return BP_OK;
    if (!json_is_object(e))
        return fail(err, src, "\"evo\" must be an object%s%s", NULL, NULL);
    static const char *const keys[] = {"generations", "lambda", "promote", "seed", "windows", NULL};
    int rc = check_keys(e, keys, "\"evo\"", src, err);
    int64_t gen = -2;
    if (rc == BP_OK && json_object_get(e, "generations") &&
        (rc = get_int(e, "generations", 0, 100000, &gen, src, err)) == BP_OK)
        s->evo_generations = gen == 0 ? -1 : gen;
    if (rc == BP_OK)
        rc = get_int(e, "lambda", 1, 4096, &s->evo_lambda, src, err);
    if (rc == BP_OK)
        rc = get_int(e, "promote", 1, 4096, &s->evo_promote, src, err);
    if (rc == BP_OK)
        rc = get_int(e, "seed", 1, INT64_MAX, &s->evo_seed, src, err);
    if (rc == BP_OK)
        rc = get_int(e, "windows", 1, 1L << 30, &s->evo_windows, src, err);
    if (rc == BP_OK && s->evo_lambda && s->evo_promote > s->evo_lambda)
        return fail(err, src, "\"evo\": \"promote\" cannot exceed \"lambda\"%s%s", NULL, NULL);
    return rc;
}

/* The constraint and search fields (docs/job-spec.md, "Constraints"). */
static int parse_constraints(json_t *root, bp_job_spec *s, const char *src, bp_error *err)
{
    static const char *const searches[] = {"default", "ilp", "lagrange", "nsga2", "evo", NULL};
    static const char *const grans[] = {"tensor", "block", NULL};
    static const char *const axes[] = {"cols", "rows", NULL};
    static const char *const phases[] = {"decode", "prefill", NULL};
    static const char *const kvf[] = {"f16", "fp8_e4m3", "int8", "int4", NULL};
    int search = 0, gran = 0, axis = 0, phase = 0, kv = 0;
    int rc;
    if ((rc = get_enum(root, "search", searches, &search, src, err)) ||
        (rc = get_enum(root, "granularity", grans, &gran, src, err)) ||
        (rc = get_enum(root, "block_axis", axes, &axis, src, err)) ||
        (rc = get_enum(root, "phase", phases, &phase, src, err)) ||
        (rc = get_enum(root, "kv_format", kvf, &kv, src, err)) ||
        (rc = get_int(root, "block_size", 1, 1L << 30, &s->block_size, src, err)) ||
        (rc = get_int(root, "batch", 1, 1L << 30, &s->batch, src, err)) ||
        (rc = get_int(root, "kv_context", 1, 1L << 30, &s->kv_context, src, err)) ||
        (rc = get_int(root, "kv_batch", 1, 1L << 30, &s->kv_batch, src, err)) ||
        (rc = get_str(root, "profile", &s->profile, src, err)) ||
        (rc = get_str(root, "profile_fallback", &s->profile_fallback, src, err)) ||
        (rc = parse_evo(root, s, src, err)))
        return rc;
    if (search == 0 && json_object_get(root, "search"))
        return bp_error_set(err, BP_EINVAL, "%s: unknown \"search\" \"default\" (ilp, lagrange, nsga2, evo)", src);
    s->search = (bp_job_search)search;
    s->granularity = (bp_job_granularity)gran;
    s->block_axis = axis;
    s->phase = phase;
    s->kv_format = kv;
    json_t *lat = json_object_get(root, "latency_us");
    if (lat && !json_is_null(lat)) {
        if (!json_is_number(lat) || !isfinite(json_number_value(lat)) || json_number_value(lat) <= 0)
            return fail(err, src, "\"latency_us\" must be a positive number of microseconds%s%s", NULL, NULL);
        s->latency_us = json_number_value(lat);
    }
    json_t *bo = json_object_get(root, "bops");
    if (bo && !json_is_null(bo)) {
        if (json_is_string(bo)) {
            if ((rc = bp_job_parse_si(json_string_value(bo), "\"bops\"", &s->bops, err)) != BP_OK)
                return bp_error_prefix(err, "%s", src);
        } else if (!json_is_number(bo) || !isfinite(json_number_value(bo)) || json_number_value(bo) <= 0) {
            return fail(err, src, "\"bops\" must be a positive number or text like \"1.5G\"%s%s", NULL, NULL);
        } else {
            s->bops = json_number_value(bo);
        }
    }
    if ((rc = bp_job_spec_check(s, err)) != BP_OK)
        return bp_error_prefix(err, "%s", src);
    return BP_OK;
}

int bp_job_spec_parse(const char *json, size_t len, const char *source, bp_job_spec_doc **out, bp_error *err)
{
    *out = NULL;
    const char *src = source ? source : "job spec";
    if (len > BP_JOB_SPEC_MAX)
        return bp_error_set(err, BP_EINVAL, "%s: larger than %u bytes", src, BP_JOB_SPEC_MAX);
    bp_job_spec_doc *d = calloc(1, sizeof *d);
    if (!d)
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
    bp_job_spec *s = &d->spec;
    bp_job_spec_default(s);
    bp_calib_spec_default(&s->calib);
    int rc = BP_OK;
    json_error_t je;
    d->root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!d->root) {
        rc = bp_error_set(err, BP_EINVAL, "%s: invalid JSON at line %d: %s", src, je.line, je.text);
        goto fail;
    }
    if (!json_is_object(d->root)) {
        rc = fail(err, src, "the spec must be a JSON object%s%s", NULL, NULL);
        goto fail;
    }
    static const char *const top[] = {"schema", "kind", "model", "budget", "formats", "rules", "imatrix",
                                      "metric", "method", "solver", "time_limit_s", "table", "calibration",
                                      "model_hash", "export_lp", "resweep", "split_rows",
                                      "split_min_weights", "search", "granularity", "block_size", "block_axis",
                                      "latency_us", "profile", "profile_fallback", "phase", "batch", "bops",
                                      "kv_context", "kv_batch", "kv_format", "evo", NULL};
    if ((rc = check_keys(d->root, top, "the spec", src, err)) != BP_OK)
        goto fail;
    json_t *schema = json_object_get(d->root, "schema");
    if (schema && (!json_is_string(schema) || strcmp(json_string_value(schema), BP_JOB_SCHEMA))) {
        rc = fail(err, src, "\"schema\" must be \"%s\"%s", BP_JOB_SCHEMA, NULL);
        goto fail;
    }
    const char *kind = NULL;
    if ((rc = get_str(d->root, "kind", &kind, src, err)) != BP_OK)
        goto fail;
    if (kind && strcmp(kind, "plan")) {
        rc = fail(err, src, "\"kind\" is \"%s\"; this parser reads \"plan\" jobs%s", kind, NULL);
        goto fail;
    }
    if ((rc = get_str(d->root, "model", &s->model_dir, src, err)) ||
        (rc = get_str(d->root, "rules", &s->rules_path, src, err)) ||
        (rc = get_str(d->root, "imatrix", &s->imatrix_path, src, err)) ||
        (rc = get_str(d->root, "table", &s->table_path, src, err)) ||
        (rc = get_str(d->root, "export_lp", &s->export_lp, src, err)))
        goto fail;
    if (!s->model_dir && !s->table_path) {
        rc = fail(err, src, "\"model\" is required%s%s", NULL, NULL);
        goto fail;
    }
    /* budget */
    json_t *b = json_object_get(d->root, "budget");
    if (!json_is_object(b) || json_object_size(b) < 1 || json_object_size(b) > 2) {
        rc = fail(err, src, "\"budget\" must be an object with \"bits\", \"bytes\" or both%s%s", NULL, NULL);
        goto fail;
    }
    {
        char text[64];
        json_t *bits = json_object_get(b, "bits"), *bytes = json_object_get(b, "bytes");
        json_t *v = bits ? bits : bytes;
        if (!v || number_text(v, text, sizeof text) || (json_object_size(b) == 2 && (!bits || !bytes))) {
            rc = fail(err, src, "\"budget\" must be {\"bits\": number} and/or {\"bytes\": number or \"7.5GB\"}%s%s",
                      NULL, NULL);
            goto fail;
        }
        rc = bits ? bp_budget_parse_bits(text, &s->budget, err) : bp_budget_parse_bytes(text, &s->budget, err);
        if (rc == BP_OK && bits && bytes) {
            bp_budget second;
            if (number_text(bytes, text, sizeof text)) {
                rc = fail(err, src, "\"budget.bytes\" must be a number or \"7.5GB\"%s%s", NULL, NULL);
                goto fail;
            }
            if ((rc = bp_budget_parse_bytes(text, &second, err)) == BP_OK)
                s->budget_bytes = second.bytes;
        }
        if (rc != BP_OK) {
            bp_error_prefix(err, "%s: budget", src);
            goto fail;
        }
    }
    /* formats */
    json_t *f = json_object_get(d->root, "formats");
    if (f && json_is_string(f) && !strcmp(json_string_value(f), "all")) {
        /* full menu */
    } else if (f && !json_is_null(f)) {
        if (!json_is_array(f) || json_array_size(f) == 0 || json_array_size(f) > 256) {
            rc = fail(err, src, "\"formats\" must be \"all\" or a non-empty array of format names%s%s", NULL, NULL);
            goto fail;
        }
        size_t cap = json_array_size(f) * (BP_FORMAT_NAME_MAX + 1) + 1;
        d->formats = calloc(1, cap);
        if (!d->formats) {
            rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
            goto fail;
        }
        size_t i;
        json_t *e;
        json_array_foreach(f, i, e) {
            if (!json_is_string(e) || json_string_length(e) >= BP_FORMAT_NAME_MAX ||
                strchr(json_string_value(e), ',')) {
                rc = fail(err, src, "\"formats\" entries must be format names%s%s", NULL, NULL);
                goto fail;
            }
            bp_format tmp;
            if ((rc = bp_format_parse(json_string_value(e), &tmp, err)) != BP_OK) {
                bp_error_prefix(err, "%s: formats[%zu]", src, i);
                goto fail;
            }
            if (i)
                strcat(d->formats, ",");
            strcat(d->formats, json_string_value(e));
        }
        s->formats = d->formats;
    }
    /* metric, method, solver */
    const char *metric = NULL, *method = NULL, *solver = NULL;
    if ((rc = get_str(d->root, "metric", &metric, src, err)) || (rc = get_str(d->root, "method", &method, src, err)) ||
        (rc = get_str(d->root, "solver", &solver, src, err)))
        goto fail;
    if (metric) {
        s->metric = bp_table_metric_from_name(metric);
        if (s->metric < 0 || s->metric >= BP_METRIC_N_ERROR) {
            rc = fail(err, src, "unknown \"metric\" \"%s\" (mse, hdiag, hfull, gptq, dkl)%s", metric, NULL);
            goto fail;
        }
    }
    if (method) {
        int m = bp_table_method_from_name(method);
        if (m < 0) {
            rc = fail(err, src, "unknown \"method\" \"%s\" (rtn, gptq, gptq_act)%s", method, NULL);
            goto fail;
        }
        s->method = (bp_quant_method)m;
    }
    if (solver) {
        if (!strcmp(solver, "ilp"))
            s->solver = BP_JOB_SOLVER_ILP;
        else if (!strcmp(solver, "dp"))
            s->solver = BP_JOB_SOLVER_DP;
        else {
            rc = fail(err, src, "unknown \"solver\" \"%s\" (ilp, dp)%s", solver, NULL);
            goto fail;
        }
    }
    json_t *tl = json_object_get(d->root, "time_limit_s");
    if (tl && !json_is_null(tl)) {
        if (!json_is_number(tl) || !isfinite(json_number_value(tl)) || json_number_value(tl) <= 0 ||
            json_number_value(tl) > 1e6) {
            rc = fail(err, src, "\"time_limit_s\" must be a number in (0, 1e6]%s%s", NULL, NULL);
            goto fail;
        }
        s->time_limit_s = json_number_value(tl);
    }
    json_t *rs = json_object_get(d->root, "resweep");
    if (rs && !json_is_null(rs)) {
        if (!json_is_boolean(rs)) {
            rc = fail(err, src, "\"resweep\" must be true or false%s%s", NULL, NULL);
            goto fail;
        }
        s->resweep = json_is_true(rs);
    }
    if ((rc = parse_split(d->root, s, src, err)) != BP_OK)
        goto fail;
    if ((rc = parse_constraints(d->root, s, src, err)) != BP_OK)
        goto fail;
    json_t *mh = json_object_get(d->root, "model_hash");
    if (mh && !json_is_null(mh)) {
        if (!json_is_boolean(mh)) {
            rc = fail(err, src, "\"model_hash\" must be true or false%s%s", NULL, NULL);
            goto fail;
        }
        s->skip_model_hash = !json_is_true(mh);
    }
    /* calibration */
    json_t *c = json_object_get(d->root, "calibration");
    if (c && !json_is_null(c)) {
        static const char *const ck[] = {"text", "tokens", "stats", "ctx", "seqs", "kl_windows", "diag_only", NULL};
        if (!json_is_object(c)) {
            rc = fail(err, src, "\"calibration\" must be an object%s%s", NULL, NULL);
            goto fail;
        }
        if ((rc = check_keys(c, ck, "\"calibration\"", src, err)) != BP_OK)
            goto fail;
        if ((rc = get_str(c, "text", &s->calib.text_path, src, err)) ||
            (rc = get_str(c, "tokens", &s->calib.tokens_path, src, err)) ||
            (rc = get_str(c, "stats", &s->calib.stats_path, src, err)) ||
            (rc = get_int(c, "ctx", 1, 1L << 24, &s->calib.ctx, src, err)) ||
            (rc = get_int(c, "seqs", 1, 1L << 30, &s->calib.n_seq, src, err)) ||
            (rc = get_int(c, "kl_windows", 1, 1L << 30, &s->calib.kl_windows, src, err)))
            goto fail;
        if (s->calib.text_path && s->calib.tokens_path) {
            rc = fail(err, src, "\"calibration\" takes \"text\" or \"tokens\", not both%s%s", NULL, NULL);
            goto fail;
        }
        json_t *dg = json_object_get(c, "diag_only");
        if (dg && !json_is_boolean(dg)) {
            rc = fail(err, src, "\"calibration.diag_only\" must be true or false%s%s", NULL, NULL);
            goto fail;
        }
        s->calib.diag_only = dg && json_is_true(dg);
    }
    *out = d;
    return BP_OK;
fail:
    bp_job_spec_doc_destroy(&d);
    return rc;
}

const bp_job_spec *bp_job_spec_get(const bp_job_spec_doc *d)
{
    return &d->spec;
}

void bp_job_spec_doc_destroy(bp_job_spec_doc **d)
{
    if (!d || !*d)
        return;
    json_decref((*d)->root);
    free((*d)->formats);
    free(*d);
    *d = NULL;
}

static void set_str(json_t *o, const char *k, const char *v)
{
    if (v)
        json_object_set_new(o, k, json_string(v));
}

static void write_constraints(json_t *o, const bp_job_spec *s)
{
    static const char *const kvf[] = {"f16", "fp8_e4m3", "int8", "int4"};
    if (s->search != BP_JOB_SEARCH_DEFAULT)
        json_object_set_new(o, "search", json_string(bp_job_search_name(s->search)));
    if (s->evo_generations || s->evo_lambda || s->evo_promote || s->evo_seed || s->evo_windows) {
        json_t *e = json_object();
        if (s->evo_generations)
            json_object_set_new(e, "generations", json_integer(s->evo_generations < 0 ? 0 : s->evo_generations));
        if (s->evo_lambda)
            json_object_set_new(e, "lambda", json_integer(s->evo_lambda));
        if (s->evo_promote)
            json_object_set_new(e, "promote", json_integer(s->evo_promote));
        if (s->evo_seed)
            json_object_set_new(e, "seed", json_integer(s->evo_seed));
        if (s->evo_windows)
            json_object_set_new(e, "windows", json_integer(s->evo_windows));
        json_object_set_new(o, "evo", e);
    }
    if (s->granularity == BP_JOB_GRANULARITY_BLOCK) {
        json_object_set_new(o, "granularity", json_string("block"));
        json_object_set_new(o, "block_size", json_integer(s->block_size));
        json_object_set_new(o, "block_axis", json_string(s->block_axis == BP_BLOCK_AXIS_ROWS ? "rows" : "cols"));
    }
    if (s->latency_us > 0) {
        json_object_set_new(o, "latency_us", json_real(s->latency_us));
        set_str(o, "profile", s->profile);
        set_str(o, "profile_fallback", s->profile_fallback);
        if (s->phase == BP_PHASE_PREFILL)
            json_object_set_new(o, "phase", json_string("prefill"));
        if (s->batch > 0)
            json_object_set_new(o, "batch", json_integer(s->batch));
    }
    if (s->bops > 0)
        json_object_set_new(o, "bops", json_real(s->bops));
    if (s->kv_context > 0) {
        json_object_set_new(o, "kv_context", json_integer(s->kv_context));
        if (s->kv_batch > 0)
            json_object_set_new(o, "kv_batch", json_integer(s->kv_batch));
        if (s->kv_format > 0 && s->kv_format < 4)
            json_object_set_new(o, "kv_format", json_string(kvf[s->kv_format]));
    }
}

char *bp_job_spec_to_json(const bp_job_spec *s, bp_error *err)
{
    json_t *o = json_object();
    if (!o) {
        bp_error_set(err, BP_ENOMEM, "out of memory");
        return NULL;
    }
    json_object_set_new(o, "schema", json_string(BP_JOB_SCHEMA));
    json_object_set_new(o, "kind", json_string("plan"));
    set_str(o, "model", s->model_dir);
    json_t *b = json_object();
    if (s->budget.kind == BP_BUDGET_BITS) {
        /* Exact decimal text from numerator / power of ten. */
        char text[160];
        uint64_t ip = s->budget.bits_num / s->budget.bits_den, fp = s->budget.bits_num % s->budget.bits_den;
        int digits = 0;
        for (uint64_t d = s->budget.bits_den; d > 1 && digits < 19; d /= 10)
            digits++;
        if (digits)
            snprintf(text, sizeof text, "%llu.%0*llu", (unsigned long long)ip, digits, (unsigned long long)fp);
        else
            snprintf(text, sizeof text, "%llu", (unsigned long long)ip);
        json_object_set_new(b, "bits", json_string(text));
    } else {
        char text[32];
        snprintf(text, sizeof text, "%llu", (unsigned long long)s->budget.bytes);
        json_object_set_new(b, "bytes", json_string(text));
    }
    if (s->budget_bytes > 0) {
        char text[32];
        snprintf(text, sizeof text, "%llu", (unsigned long long)s->budget_bytes);
        json_object_set_new(b, "bytes", json_string(text));
    }
    json_object_set_new(o, "budget", b);
    if (s->formats) {
        json_t *a = json_array();
        const char *p = s->formats;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            json_array_append_new(a, json_stringn(p, n));
            p += n;
            if (*p == ',')
                p++;
        }
        json_object_set_new(o, "formats", a);
    }
    set_str(o, "rules", s->rules_path);
    set_str(o, "imatrix", s->imatrix_path);
    if (s->metric >= 0)
        json_object_set_new(o, "metric", json_string(bp_table_metric_name((bp_metric)s->metric)));
    json_object_set_new(o, "method", json_string(bp_table_method_name(s->method)));
    json_object_set_new(o, "solver", json_string(s->solver == BP_JOB_SOLVER_DP ? "dp" : "ilp"));
    if (s->time_limit_s > 0)
        json_object_set_new(o, "time_limit_s", json_real(s->time_limit_s));
    set_str(o, "table", s->table_path);
    set_str(o, "export_lp", s->export_lp);
    if (s->skip_model_hash)
        json_object_set_new(o, "model_hash", json_false());
    if (s->resweep)
        json_object_set_new(o, "resweep", json_true());
    write_constraints(o, s);
    if (s->split_rows)
        json_object_set_new(o, "split_rows", json_integer(s->split_rows > 0 ? s->split_rows : 0));
    if (s->split_min_weights)
        json_object_set_new(o, "split_min_weights",
                            json_integer(s->split_min_weights > 0 ? s->split_min_weights : 0));
    if (bp_calib_spec_given(&s->calib)) {
        json_t *c = json_object();
        set_str(c, "text", s->calib.text_path);
        set_str(c, "tokens", s->calib.tokens_path);
        set_str(c, "stats", s->calib.stats_path);
        if (s->calib.ctx)
            json_object_set_new(c, "ctx", json_integer(s->calib.ctx));
        if (s->calib.n_seq)
            json_object_set_new(c, "seqs", json_integer(s->calib.n_seq));
        if (s->calib.kl_windows)
            json_object_set_new(c, "kl_windows", json_integer(s->calib.kl_windows));
        if (s->calib.diag_only)
            json_object_set_new(c, "diag_only", json_true());
        json_object_set_new(o, "calibration", c);
    }
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text)
        bp_error_set(err, BP_ENOMEM, "out of memory");
    return text;
}
