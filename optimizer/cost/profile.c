/* Hardware profiles: the compiled-in copies of docs/profiles/ and the
 * bitplan.hwprofile/v1 JSON reader (docs/cost-models.md). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cost_internal.h"

/* Keep these equal to docs/profiles/<name>.json (tests/cost/test_cost_profile.c
 * compares them); the sources of every figure are cited there. */
static const bp_hw_profile builtins[] = {
    {.name = "h100",
     .description = "NVIDIA H100 SXM5 80GB",
     .memory_bandwidth = 3.35e12,
     .peak_ops = {[BP_COMPUTE_FP16] = 989.4e12,
                  [BP_COMPUTE_INT8] = 1978.9e12,
                  [BP_COMPUTE_FP8] = 1978.9e12}},
    {.name = "a100",
     .description = "NVIDIA A100 80GB SXM4",
     .memory_bandwidth = 2.039e12,
     .peak_ops = {[BP_COMPUTE_FP16] = 312e12,
                  [BP_COMPUTE_INT8] = 624e12,
                  [BP_COMPUTE_INT4] = 1248e12}},
    {.name = "rtx4090",
     .description = "NVIDIA GeForce RTX 4090",
     .memory_bandwidth = 1.008e12,
     .peak_ops = {[BP_COMPUTE_FP16] = 165.2e12,
                  [BP_COMPUTE_INT8] = 660.6e12,
                  [BP_COMPUTE_FP8] = 330.3e12,
                  [BP_COMPUTE_INT4] = 1321.2e12}},
    {.name = "cpu",
     .description = "generic CPU: 8 cores, 2x256-bit FMA at 3 GHz, dual-channel DDR5-4800",
     .memory_bandwidth = 76.8e9,
     .peak_ops = {[BP_COMPUTE_FP16] = 768e9}},
};
#define N_BUILTINS (sizeof builtins / sizeof builtins[0])

const char *bp_hw_profile_builtin_name(size_t i)
{
    return i < N_BUILTINS ? builtins[i].name : NULL;
}

void bp_hw_profile_destroy(bp_hw_profile **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

int bp_hw_profile_builtin(const char *name, bp_hw_profile **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_hw_profile_builtin: NULL out");
    *out = NULL;
    for (size_t i = 0; name && i < N_BUILTINS; i++) {
        if (strcmp(name, builtins[i].name))
            continue;
        bp_hw_profile *p = malloc(sizeof *p);
        if (!p)
            return bp_error_set(err, BP_ENOMEM, "profile %s: out of memory", name);
        *p = builtins[i];
        *out = p;
        return BP_OK;
    }
    return bp_error_set(err, BP_ENOTFOUND,
                        "unknown hardware profile \"%s\" (builtins: h100, a100, rtx4090, "
                        "cpu; or give a bitplan.hwprofile/v1 JSON file)",
                        name ? name : "(null)");
}

static int positive_finite(double v)
{
    return isfinite(v) && v > 0;
}

int bp_hw_profile_validate(const bp_hw_profile *hw, bp_error *err)
{
    if (!hw)
        return bp_error_set(err, BP_EINVAL, "NULL hardware profile");
    if (!memchr(hw->name, '\0', sizeof hw->name) ||
        !memchr(hw->description, '\0', sizeof hw->description))
        return bp_error_set(err, BP_EINVAL, "hardware profile: name or description not "
                                            "terminated");
    const char *n = hw->name[0] ? hw->name : "(unnamed)";
    if (!positive_finite(hw->memory_bandwidth))
        return bp_error_set(err, BP_EINVAL,
                            "hardware profile %s: memory_bandwidth %g must be a positive "
                            "finite number of bytes/s",
                            n, hw->memory_bandwidth);
    for (int c = 0; c < BP_COMPUTE_COUNT; c++) {
        double v = hw->peak_ops[c];
        if (!isfinite(v) || v < 0 || (c == BP_COMPUTE_FP16 && v == 0))
            return bp_error_set(err, BP_EINVAL,
                                "hardware profile %s: peak_ops[%s] %g must be %s", n,
                                bp_compute_class_name((bp_compute_class)c), v,
                                c == BP_COMPUTE_FP16
                                    ? "a positive finite number of ops/s"
                                    : "a positive finite number of ops/s or 0 (none)");
    }
    if (!isfinite(hw->launch_overhead_us) || hw->launch_overhead_us < 0)
        return bp_error_set(err, BP_EINVAL,
                            "hardware profile %s: launch_overhead_us %g must be finite "
                            "and >= 0",
                            n, hw->launch_overhead_us);
    if (hw->weight_only != 0 && hw->weight_only != 1)
        return bp_error_set(err, BP_EINVAL, "hardware profile %s: weight_only must be 0 or 1",
                            n);
    return BP_OK;
}

/* A JSON number that is finite and > 0 (>= 0 with allow_zero). */
static int get_number(const char *src, const char *key, json_t *v, int allow_zero,
                      double *out, bp_error *err)
{
    if (!json_is_number(v))
        return bp_error_set(err, BP_EFORMAT, "%s: %s: must be a number", src, key);
    double d = json_number_value(v);
    if (!isfinite(d) || d < 0 || (!allow_zero && d == 0))
        return bp_error_set(err, BP_EFORMAT, "%s: %s: must be a %s finite number (got %g)",
                            src, key, allow_zero ? "non-negative" : "positive", d);
    *out = d;
    return BP_OK;
}

static int get_string_array(const char *src, const char *key, json_t *v, bp_error *err)
{
    if (!json_is_array(v))
        return bp_error_set(err, BP_EFORMAT, "%s: %s: must be an array of strings", src,
                            key);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s) || json_string_length(s) == 0)
            return bp_error_set(err, BP_EFORMAT, "%s: %s[%zu]: must be a non-empty string",
                                src, key, i);
    }
    return BP_OK;
}

static int parse_peaks(const char *src, json_t *obj, bp_hw_profile *p, bp_error *err)
{
    static const char *key = "peak_ops_per_s";
    if (!json_is_object(obj))
        return bp_error_set(err, BP_EFORMAT,
                            "%s: %s: must be an object of ops/s per compute class "
                            "(fp16, int8, fp8, int4, fp4)",
                            src, key);
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        bp_compute_class c;
        if (bp_compute_class_parse(k, &c, NULL) != BP_OK)
            return bp_error_set(err, BP_EFORMAT,
                                "%s: %s.%s: unknown compute class (known: fp16, int8, "
                                "fp8, int4, fp4)",
                                src, key, k);
        char full[96];
        snprintf(full, sizeof full, "%s.%s", key, k);
        int rc = get_number(src, full, v, 0, &p->peak_ops[c], err);
        if (rc)
            return rc;
    }
    if (!(p->peak_ops[BP_COMPUTE_FP16] > 0))
        return bp_error_set(err, BP_EFORMAT,
                            "%s: %s.fp16: missing (every profile needs the fp16 class, "
                            "the fallback of formats without native support)",
                            src, key);
    return BP_OK;
}

static const char *const known_keys[] = {
    "schema",  "name",           "description",        "memory_bandwidth_bytes_per_s",
    "peak_ops_per_s", "launch_overhead_us", "weight_only", "sources",
    "notes",
};

static int parse_profile(const char *src, json_t *root, bp_hw_profile *p, bp_error *err)
{
    if (!json_is_object(root))
        return bp_error_set(err, BP_EFORMAT, "%s: top level must be an object", src);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        size_t i = 0;
        while (i < sizeof known_keys / sizeof known_keys[0] && strcmp(key, known_keys[i]))
            i++;
        if (i == sizeof known_keys / sizeof known_keys[0])
            return bp_error_set(err, BP_EFORMAT,
                                "%s: unknown key \"%s\" (known: schema, name, "
                                "description, memory_bandwidth_bytes_per_s, "
                                "peak_ops_per_s, launch_overhead_us, weight_only, "
                                "sources, notes)",
                                src, key);
    }
    json_t *schema = json_object_get(root, "schema");
    if (!json_is_string(schema) || strcmp(json_string_value(schema), BP_HWPROFILE_SCHEMA))
        return bp_error_set(err, BP_EFORMAT, "%s: schema: must be \"%s\"", src,
                            BP_HWPROFILE_SCHEMA);
    json_t *name = json_object_get(root, "name");
    if (!json_is_string(name))
        return bp_error_set(err, BP_EFORMAT, "%s: name: missing or not a string", src);
    const char *ns = json_string_value(name);
    size_t nl = json_string_length(name);
    if (nl == 0 || nl >= BP_HW_NAME_MAX || strlen(ns) != nl)
        return bp_error_set(err, BP_EFORMAT, "%s: name: must be 1 to %d characters", src,
                            BP_HW_NAME_MAX - 1);
    for (size_t i = 0; i < nl; i++) {
        char c = ns[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return bp_error_set(err, BP_EFORMAT,
                                "%s: name: \"%s\": only letters, digits, '_', '-', '.'", src,
                                ns);
    }
    memcpy(p->name, ns, nl + 1);
    json_t *desc = json_object_get(root, "description");
    if (desc) {
        size_t dl = json_string_length(desc);
        if (!json_is_string(desc) || dl >= BP_HW_DESC_MAX ||
            strlen(json_string_value(desc)) != dl)
            return bp_error_set(err, BP_EFORMAT,
                                "%s: description: must be a string of at most %d "
                                "characters",
                                src, BP_HW_DESC_MAX - 1);
        memcpy(p->description, json_string_value(desc), dl + 1);
    }
    int rc;
    v = json_object_get(root, "memory_bandwidth_bytes_per_s");
    if (!v)
        return bp_error_set(err, BP_EFORMAT, "%s: memory_bandwidth_bytes_per_s: missing",
                            src);
    if ((rc = get_number(src, "memory_bandwidth_bytes_per_s", v, 0, &p->memory_bandwidth,
                         err)))
        return rc;
    v = json_object_get(root, "peak_ops_per_s");
    if (!v)
        return bp_error_set(err, BP_EFORMAT, "%s: peak_ops_per_s: missing", src);
    if ((rc = parse_peaks(src, v, p, err)))
        return rc;
    if ((v = json_object_get(root, "launch_overhead_us")) &&
        (rc = get_number(src, "launch_overhead_us", v, 1, &p->launch_overhead_us, err)))
        return rc;
    if ((v = json_object_get(root, "weight_only"))) {
        if (!json_is_boolean(v))
            return bp_error_set(err, BP_EFORMAT, "%s: weight_only: must be true or false",
                                src);
        p->weight_only = json_is_true(v);
    }
    if ((v = json_object_get(root, "sources")) &&
        (rc = get_string_array(src, "sources", v, err)))
        return rc;
    if ((v = json_object_get(root, "notes")) && (rc = get_string_array(src, "notes", v, err)))
        return rc;
    return BP_OK;
}

int bp_hw_profile_from_json_text(const char *text, const char *source,
                                 bp_hw_profile **out, bp_error *err)
{
    const char *src = source ? source : "profile";
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_hw_profile_from_json_text: NULL out");
    *out = NULL;
    if (!text)
        return bp_error_set(err, BP_EINVAL, "%s: NULL text", src);
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return bp_error_set(err, BP_EFORMAT, "%s:%d:%d: invalid JSON: %s", src, je.line,
                            je.column, je.text);
    bp_hw_profile *p = calloc(1, sizeof *p);
    int rc = p ? parse_profile(src, root, p, err)
               : bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
    json_decref(root);
    if (rc == BP_OK && (rc = bp_hw_profile_validate(p, err)))
        bp_error_prefix(err, "%s", src); /* unreachable with the checks above */
    if (rc)
        bp_hw_profile_destroy(&p);
    *out = p;
    return rc;
}

int bp_hw_profile_load(const char *path, bp_hw_profile **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_hw_profile_load: NULL out");
    *out = NULL;
    if (!path)
        return bp_error_set(err, BP_EINVAL, "bp_hw_profile_load: NULL path");
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return bp_error_set(err, errno == ENOENT ? BP_ENOTFOUND : BP_EIO, "%s: %s", path,
                            strerror(errno));
    char *buf = malloc(BP_HWPROFILE_MAX_FILE + 1);
    if (!buf) {
        fclose(fp);
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, BP_HWPROFILE_MAX_FILE + 1, fp);
    int rc = BP_OK;
    if (ferror(fp))
        rc = bp_error_set(err, BP_EIO, "%s: read error", path);
    else if (n > BP_HWPROFILE_MAX_FILE)
        rc = bp_error_set(err, BP_EFORMAT, "%s: larger than %u bytes", path,
                          BP_HWPROFILE_MAX_FILE);
    else if (memchr(buf, '\0', n))
        rc = bp_error_set(err, BP_EFORMAT, "%s: contains a NUL byte", path);
    fclose(fp);
    if (rc == BP_OK) {
        buf[n] = '\0';
        rc = bp_hw_profile_from_json_text(buf, path, out, err);
    }
    free(buf);
    return rc;
}

int bp_hw_profile_open(const char *name_or_path, bp_hw_profile **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_hw_profile_open: NULL out");
    *out = NULL;
    if (!name_or_path || !*name_or_path)
        return bp_error_set(err, BP_EINVAL, "--profile: empty (give h100, a100, rtx4090, "
                                            "cpu or a JSON file)");
    for (size_t i = 0; i < N_BUILTINS; i++)
        if (strcmp(name_or_path, builtins[i].name) == 0)
            return bp_hw_profile_builtin(name_or_path, out, err);
    int rc = bp_hw_profile_load(name_or_path, out, err);
    if (rc == BP_ENOTFOUND)
        return bp_error_set(err, rc,
                            "--profile \"%s\": not a builtin profile (h100, a100, rtx4090, "
                            "cpu) and no such file",
                            name_or_path);
    return rc;
}
