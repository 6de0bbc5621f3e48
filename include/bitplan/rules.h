/* bitplan: rules deciding which tensors are quantized and with which formats.
 *
 * A rules file is JSON (full reference: docs/rules.md):
 *
 *   {"schema": "bitplan.rules/v1",
 *    "rules": [
 *      {"match": "lm_head.weight", "include": true, "pin": "int8_pc_sym"},
 *      {"match": "*.mlp.down_proj.weight", "min_bits": 4},
 *      {"match": "re:model\\.layers\\.(0|1)\\..*", "formats": ["int8_g128_sym"]}
 *    ]}
 *
 * Semantics, for one tensor:
 *  1. Default: included when it is 2-D and its name starts with
 *     "model.layers." (the decoder layers); embeddings, lm_head, norms and
 *     every other tensor are left in their source dtype.
 *  2. Rules are applied in file order. A rule applies when `match` matches
 *     the whole name: an fnmatch(3) glob (no flags: '*' also matches '.'),
 *     or "re:<POSIX extended regex>" (anchored to the whole name). Each
 *     field a rule sets overrides the value from earlier rules; fields it
 *     does not set are kept. Setting a field to null restores its default.
 *  3. Only 2-D tensors are ever quantized: for any other tensor the result
 *     is include = 0 whatever the rules say.
 *  Fields: include (bool); formats (non-empty array of canonical format
 *  names; the allowed menu becomes the job's menu intersected with it);
 *  pin (one canonical format name: the tensor gets exactly that format,
 *  regardless of formats/min_bits and of the job's menu; the tensor must
 *  support it); min_bits (number in [0, 64]: formats whose nominal bits per
 *  weight are below it are dropped; pins are exempt); comment (string,
 *  ignored). Unknown keys are errors, so typos do not pass silently.
 *
 * Ties: an entry {"tie": [pattern, ...]} (no "match"; patterns as `match`)
 * makes the tensors of one decoder layer ("model.layers.N.") that match any
 * of its patterns share one format (fused q/k/v, gate/up). Tie entries take
 * no part in bp_rules_resolve; they count in bp_rules_count and
 * bp_rules_rule_matches (a tie matches a name any of its patterns matches).
 */
#ifndef BITPLAN_RULES_H
#define BITPLAN_RULES_H

#include <stddef.h>

#include "bitplan/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_RULES_SCHEMA "bitplan.rules/v1"
/* A rules file larger than this is refused (bytes). */
#define BP_RULES_MAX_FILE ((size_t)16 << 20)

typedef struct bp_rules bp_rules;

/* Load and validate a rules file. Caller owns *out (NULL on failure).
 * Errors name the file and the JSON path: "r.json: rules[2].pin: unknown
 * format \"int9\"" (BP_EFORMAT), BP_ENOTFOUND, BP_EIO, BP_ENOMEM. */
int bp_rules_load(const char *path, bp_rules **out, bp_error *err);

/* Same from a NUL-terminated JSON text; source names it in messages
 * (NULL: "rules"). */
int bp_rules_from_json_text(const char *text, const char *source,
                            bp_rules **out, bp_error *err);

void bp_rules_destroy(bp_rules **r);

/* Number of rules; 0 for NULL. */
size_t bp_rules_count(const bp_rules *r);
/* The `match` text of rule i (owned by r), or NULL when out of range. */
const char *bp_rules_match_text(const bp_rules *r, size_t i);
/* 1 when rule i's match applies to name, else 0. */
int bp_rules_rule_matches(const bp_rules *r, size_t i, const char *name);

typedef struct bp_rule_result {
    int include;                  /* 1 = quantize this tensor */
    const char *pin;              /* NULL, or a canonical format name */
    const char *const *formats;   /* NULL = no restriction; else n_formats names */
    size_t n_formats;
    double min_bits;              /* 0 = no minimum */
    long last_rule;               /* index of the last matching rule, -1 none */
} bp_rule_result;

/* Resolve the rules for one tensor (rules NULL = defaults only). Strings in
 * *out are owned by rules and live as long as it. BP_EINVAL when name or
 * out is NULL. */
int bp_rules_resolve(const bp_rules *rules, const char *tensor_name, int ndim,
                     bp_rule_result *out);

/* Number of tie entries; 0 for NULL. */
size_t bp_rules_tie_count(const bp_rules *r);

/* Which tie entry (0-based among the ties, in file order) matches
 * tensor_name: *tie = -1 when none. BP_EINVAL naming the tensor when two
 * ties match it (a tensor can share its format with one group only). */
int bp_rules_tie_find(const bp_rules *r, const char *tensor_name, long *tie,
                      bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
