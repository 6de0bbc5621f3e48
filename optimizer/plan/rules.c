/* Rules files (docs/rules.md): parsing, validation and resolution. */
#include "bitplan/rules.h"

#include <errno.h>
#include <fnmatch.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/format.h"

/* Which fields a rule sets; a field set to null resets it to the default. */
enum {
    SET_INCLUDE = 1,
    SET_FORMATS = 2,
    SET_PIN = 4,
    SET_MIN_BITS = 8
};

typedef struct rule {
    char *match;      /* as written */
    int is_regex;
    regex_t re;       /* is_regex: compiled "^(pattern)$" */
    unsigned set;     /* SET_* */
    int include;
    char **formats;   /* NULL with SET_FORMATS = reset */
    size_t n_formats;
    char *pin;        /* NULL with SET_PIN = reset */
    double min_bits;  /* NaN with SET_MIN_BITS = reset */
    struct rule *tie; /* a {"tie": [...]} entry: its patterns, n_tie of them
                         (match/re unused); NULL for an ordinary rule */
    size_t n_tie;
} rule;

struct bp_rules {
    rule *rules;
    size_t n;
};

static void rule_free(rule *u)
{
    if (u->is_regex)
        regfree(&u->re);
    free(u->match);
    for (size_t j = 0; j < u->n_formats; j++)
        free(u->formats[j]);
    free(u->formats);
    free(u->pin);
    for (size_t j = 0; j < u->n_tie; j++)
        rule_free(&u->tie[j]);
    free(u->tie);
}

void bp_rules_destroy(bp_rules **rp)
{
    if (!rp || !*rp)
        return;
    bp_rules *r = *rp;
    for (size_t i = 0; i < r->n; i++)
        rule_free(&r->rules[i]);
    free(r->rules);
    free(r);
    *rp = NULL;
}

size_t bp_rules_count(const bp_rules *r)
{
    return r ? r->n : 0;
}

const char *bp_rules_match_text(const bp_rules *r, size_t i)
{
    return r && i < r->n ? r->rules[i].match : NULL;
}

/* fnmatch(3) accepts malformed patterns and treats them literally, which
 * would make a typo like "model.layers.[0-3.*" silently match nothing.
 * Reject an unclosed bracket expression or a trailing backslash. */
static const char *glob_problem(const char *g)
{
    for (const char *p = g; *p; p++) {
        if (*p == '\\') {
            if (!p[1])
                return "trailing backslash";
            p++;
        } else if (*p == '[') {
            const char *q = p + 1;
            if (*q == '!' || *q == '^')
                q++;
            if (*q == ']')
                q++; /* a leading ']' is a literal member */
            while (*q && *q != ']')
                q++;
            if (!*q)
                return "unclosed '[' bracket expression";
            p = q;
        }
    }
    return NULL;
}

static int rule_matches(const rule *u, const char *name)
{
    if (u->tie) {
        for (size_t j = 0; j < u->n_tie; j++)
            if (rule_matches(&u->tie[j], name))
                return 1;
        return 0;
    }
    if (u->is_regex)
        return regexec(&u->re, name, 0, NULL, 0) == 0;
    return fnmatch(u->match, name, 0) == 0;
}

int bp_rules_rule_matches(const bp_rules *r, size_t i, const char *name)
{
    if (!r || i >= r->n || !name)
        return 0;
    return rule_matches(&r->rules[i], name);
}

/* Checks a format name: it must parse and be canonical. */
static int check_format_name(const char *src, const char *path, const char *name,
                             bp_error *err)
{
    bp_format f;
    bp_error fe;
    if (!*name)
        return bp_error_set(err, BP_EFORMAT, "%s: %s: empty format name", src, path);
    if (bp_format_parse(name, &f, &fe) != BP_OK)
        return bp_error_set(err, BP_EFORMAT, "%s: %s: unknown format \"%s\" (%s)", src,
                            path, name, fe.msg);
    if (strcmp(f.name, name) != 0)
        return bp_error_set(err, BP_EFORMAT,
                            "%s: %s: format \"%s\" is not canonical (write \"%s\")", src,
                            path, name, f.name);
    return BP_OK;
}

/* Compiles a `match` pattern (glob or "re:" regex) into u. */
static int compile_match(const char *src, const char *path, json_t *m, rule *u, bp_error *err)
{
    if (!json_is_string(m))
        return bp_error_set(err, BP_EFORMAT, "%s: %s: must be a string", src, path);
    const char *mt = json_string_value(m);
    if (!*mt || strlen(mt) != json_string_length(m))
        return bp_error_set(err, BP_EFORMAT, "%s: %s: empty or contains NUL", src,
                            path);
    u->match = strdup(mt);
    if (!u->match)
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
    if (strncmp(mt, "re:", 3) == 0) {
        const char *pat = mt + 3;
        if (!*pat)
            return bp_error_set(err, BP_EFORMAT, "%s: %s: empty regular expression",
                                src, path);
        /* Compile the pattern alone first: wrapping it in ^(...)$ could turn
         * an invalid one like "a)(b" into a valid one. */
        regex_t probe;
        int rc = regcomp(&probe, pat, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char buf[256];
            regerror(rc, &probe, buf, sizeof buf);
            return bp_error_set(err, BP_EFORMAT,
                                "%s: %s: invalid regular expression \"%s\": %s", src,
                                path, pat, buf);
        }
        regfree(&probe);
        size_t n = strlen(pat);
        char *wrapped = malloc(n + 5);
        if (!wrapped)
            return bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
        snprintf(wrapped, n + 5, "^(%s)$", pat);
        rc = regcomp(&u->re, wrapped, REG_EXTENDED | REG_NOSUB);
        free(wrapped);
        if (rc != 0)
            return bp_error_set(err, BP_EFORMAT,
                                "%s: %s: invalid regular expression \"%s\"", src,
                                path, pat);
        u->is_regex = 1;
    } else {
        const char *why = glob_problem(mt);
        if (why)
            return bp_error_set(err, BP_EFORMAT, "%s: %s: invalid glob \"%s\": %s",
                                src, path, mt, why);
    }

    return BP_OK;
}

/* {"tie": [pattern, ...], "comment": ...}: tensors of one layer matching
 * any of the patterns share a format. */
static int parse_tie(const char *src, const char *path, json_t *obj, rule *u, bp_error *err)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (strcmp(key, "tie") && strcmp(key, "comment"))
            return bp_error_set(err, BP_EFORMAT,
                                "%s: %s: unknown key \"%s\" in a tie entry (known: tie, comment)",
                                src, path, key);
    }
    json_t *arr = json_object_get(obj, "tie");
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    if (n == 0)
        return bp_error_set(err, BP_EFORMAT, "%s: %s.tie: must be a non-empty array of patterns",
                            src, path);
    u->tie = calloc(n, sizeof *u->tie);
    if (!u->tie)
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
    for (size_t j = 0; j < n; j++) {
        char ep[96];
        snprintf(ep, sizeof ep, "%s.tie[%zu]", path, j);
        u->n_tie = j + 1; /* so destroy frees the partial pattern */
        int rc = compile_match(src, ep, json_array_get(arr, j), &u->tie[j], err);
        if (rc)
            return rc;
    }
    u->match = strdup(u->tie[0].match);
    return u->match ? BP_OK : bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
}

static int parse_rule(const char *src, size_t idx, json_t *obj, rule *u, bp_error *err)
{
    char path[64];
    snprintf(path, sizeof path, "rules[%zu]", idx);
    if (!json_is_object(obj))
        return bp_error_set(err, BP_EFORMAT, "%s: %s: must be an object", src, path);
    if (json_object_get(obj, "tie"))
        return parse_tie(src, path, obj, u, err);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (strcmp(key, "match") && strcmp(key, "include") && strcmp(key, "formats") &&
            strcmp(key, "pin") && strcmp(key, "min_bits") && strcmp(key, "comment"))
            return bp_error_set(err, BP_EFORMAT,
                                "%s: %s: unknown key \"%s\" (known: match, include, "
                                "formats, pin, min_bits, tie, comment)",
                                src, path, key);
    }
    json_t *m = json_object_get(obj, "match");
    if (!m)
        return bp_error_set(err, BP_EFORMAT, "%s: %s: missing \"match\"", src, path);
    char mpath[80];
    snprintf(mpath, sizeof mpath, "%s.match", path);
    int mrc = compile_match(src, mpath, m, u, err);
    if (mrc)
        return mrc;


    if ((v = json_object_get(obj, "include"))) {
        if (!json_is_boolean(v))
            return bp_error_set(err, BP_EFORMAT, "%s: %s.include: must be true or false",
                                src, path);
        u->set |= SET_INCLUDE;
        u->include = json_is_true(v);
    }
    if ((v = json_object_get(obj, "formats"))) {
        u->set |= SET_FORMATS;
        if (!json_is_null(v)) {
            if (!json_is_array(v))
                return bp_error_set(err, BP_EFORMAT,
                                    "%s: %s.formats: must be an array of format names or "
                                    "null",
                                    src, path);
            size_t n = json_array_size(v);
            if (n == 0)
                return bp_error_set(err, BP_EFORMAT,
                                    "%s: %s.formats: empty (to skip tensors use "
                                    "\"include\": false)",
                                    src, path);
            u->formats = calloc(n, sizeof *u->formats);
            if (!u->formats)
                return bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
            for (size_t j = 0; j < n; j++) {
                json_t *e = json_array_get(v, j);
                char ep[96];
                snprintf(ep, sizeof ep, "%s.formats[%zu]", path, j);
                if (!json_is_string(e))
                    return bp_error_set(err, BP_EFORMAT, "%s: %s: must be a string", src,
                                        ep);
                const char *name = json_string_value(e);
                int rc = check_format_name(src, ep, name, err);
                if (rc)
                    return rc;
                for (size_t k = 0; k < u->n_formats; k++)
                    if (strcmp(u->formats[k], name) == 0)
                        return bp_error_set(err, BP_EFORMAT,
                                            "%s: %s: \"%s\" listed twice", src, ep, name);
                u->formats[j] = strdup(name);
                if (!u->formats[j])
                    return bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
                u->n_formats = j + 1;
            }
        }
    }
    if ((v = json_object_get(obj, "pin"))) {
        u->set |= SET_PIN;
        if (!json_is_null(v)) {
            char ep[96];
            snprintf(ep, sizeof ep, "%s.pin", path);
            if (!json_is_string(v))
                return bp_error_set(err, BP_EFORMAT,
                                    "%s: %s: must be a format name or null", src, ep);
            int rc = check_format_name(src, ep, json_string_value(v), err);
            if (rc)
                return rc;
            u->pin = strdup(json_string_value(v));
            if (!u->pin)
                return bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
        }
    }
    if ((v = json_object_get(obj, "min_bits"))) {
        u->set |= SET_MIN_BITS;
        u->min_bits = NAN;
        if (!json_is_null(v)) {
            double d = json_is_number(v) ? json_number_value(v) : NAN;
            if (!json_is_number(v) || !isfinite(d) || d < 0 || d > 64)
                return bp_error_set(err, BP_EFORMAT,
                                    "%s: %s.min_bits: must be a number in [0, 64] or null",
                                    src, path);
            u->min_bits = d;
        }
    }
    if (!u->set)
        return bp_error_set(err, BP_EFORMAT,
                            "%s: %s: sets nothing (give include, formats, pin or "
                            "min_bits)",
                            src, path);
    return BP_OK;
}

int bp_rules_from_json_text(const char *text, const char *source, bp_rules **out,
                            bp_error *err)
{
    const char *src = source ? source : "rules";
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_rules_from_json_text: NULL out");
    *out = NULL;
    if (!text)
        return bp_error_set(err, BP_EINVAL, "%s: NULL text", src);
    int rc = BP_OK;
    bp_rules *r = NULL;
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return bp_error_set(err, BP_EFORMAT, "%s:%d:%d: invalid JSON: %s", src, je.line,
                            je.column, je.text);
    if (!json_is_object(root)) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: top level must be an object", src);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "schema") && strcmp(key, "rules") && strcmp(key, "comment")) {
            rc = bp_error_set(err, BP_EFORMAT,
                              "%s: unknown key \"%s\" (known: schema, rules, comment)", src,
                              key);
            goto out;
        }
    }
    json_t *schema = json_object_get(root, "schema");
    if (!json_is_string(schema) || strcmp(json_string_value(schema), BP_RULES_SCHEMA)) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: schema: must be \"%s\"", src,
                          BP_RULES_SCHEMA);
        goto out;
    }
    json_t *arr = json_object_get(root, "rules");
    if (!json_is_array(arr)) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: rules: must be an array", src);
        goto out;
    }
    r = calloc(1, sizeof *r);
    size_t n = json_array_size(arr);
    if (r && n)
        r->rules = calloc(n, sizeof *r->rules);
    if (!r || (n && !r->rules)) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        r->n = i + 1; /* so destroy frees the partial rule */
        if ((rc = parse_rule(src, i, json_array_get(arr, i), &r->rules[i], err)))
            goto out;
    }
out:
    json_decref(root);
    if (rc)
        bp_rules_destroy(&r);
    else
        *out = r;
    return rc;
}

int bp_rules_load(const char *path, bp_rules **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_rules_load: NULL out");
    *out = NULL;
    if (!path)
        return bp_error_set(err, BP_EINVAL, "bp_rules_load: NULL path");
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return bp_error_set(err, errno == ENOENT ? BP_ENOTFOUND : BP_EIO, "%s: %s", path,
                            strerror(errno));
    char *buf = malloc(BP_RULES_MAX_FILE + 1);
    if (!buf) {
        fclose(fp);
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, BP_RULES_MAX_FILE + 1, fp);
    int rc = BP_OK;
    if (ferror(fp))
        rc = bp_error_set(err, BP_EIO, "%s: read error", path);
    else if (n > BP_RULES_MAX_FILE)
        rc = bp_error_set(err, BP_EFORMAT, "%s: larger than %zu bytes", path,
                          BP_RULES_MAX_FILE);
    else if (memchr(buf, '\0', n))
        rc = bp_error_set(err, BP_EFORMAT, "%s: contains a NUL byte", path);
    fclose(fp);
    if (rc == BP_OK) {
        buf[n] = '\0';
        rc = bp_rules_from_json_text(buf, path, out, err);
    }
    free(buf);
    return rc;
}

int bp_rules_resolve(const bp_rules *rules, const char *name, int ndim,
                     bp_rule_result *out)
{
    if (!name || !out)
        return BP_EINVAL;
    memset(out, 0, sizeof *out);
    out->last_rule = -1;
    out->include = ndim == 2 && strncmp(name, "model.layers.", 13) == 0;
    for (size_t i = 0; rules && i < rules->n; i++) {
        const rule *u = &rules->rules[i];
        if (u->tie || !rule_matches(u, name))
            continue;
        out->last_rule = (long)i;
        if (u->set & SET_INCLUDE)
            out->include = u->include;
        if (u->set & SET_FORMATS) {
            out->formats = (const char *const *)u->formats;
            out->n_formats = u->n_formats;
        }
        if (u->set & SET_PIN)
            out->pin = u->pin;
        if (u->set & SET_MIN_BITS)
            out->min_bits = isnan(u->min_bits) ? 0 : u->min_bits;
    }
    if (ndim != 2)
        out->include = 0;
    return BP_OK;
}

size_t bp_rules_tie_count(const bp_rules *r)
{
    size_t n = 0;
    for (size_t i = 0; r && i < r->n; i++)
        n += r->rules[i].tie != NULL;
    return n;
}

int bp_rules_tie_find(const bp_rules *r, const char *name, long *tie, bp_error *err)
{
    if (!name || !tie)
        return bp_error_set(err, BP_EINVAL, "bp_rules_tie_find: NULL argument");
    *tie = -1;
    long k = 0;
    size_t first = 0;
    for (size_t i = 0; r && i < r->n; i++) {
        if (!r->rules[i].tie)
            continue;
        if (rule_matches(&r->rules[i], name)) {
            if (*tie >= 0)
                return bp_error_set(err, BP_EINVAL,
                                    "tensor \"%s\" is in two ties (rules[%zu] and rules[%zu])",
                                    name, first, i);
            *tie = k;
            first = i;
        }
        k++;
    }
    return BP_OK;
}
