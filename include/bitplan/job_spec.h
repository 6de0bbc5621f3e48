/* bitplan: the job spec — everything `bitplan plan` takes, as JSON, so a
 * job can be submitted to the coordinator (docs/job-spec.md).
 *
 *   {"schema": "bitplan.job/v1", "kind": "plan",
 *    "model": "examples/models/tiny-llama-kjv",
 *    "budget": {"bits": 3.5},
 *    "formats": ["int3_g128_asym", "int4_g128_asym"],
 *    "metric": "gptq",
 *    "calibration": {"text": "examples/models/tiny-llama-kjv/calib.txt", "ctx": 128}}
 */
#ifndef BITPLAN_JOB_SPEC_H
#define BITPLAN_JOB_SPEC_H

#include <stddef.h>

#include "bitplan/job.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_JOB_SCHEMA "bitplan.job/v1"
#define BP_JOB_SPEC_MAX (1u << 20) /* bytes */

/* A parsed spec: `spec` points into storage owned by this object. */
typedef struct bp_job_spec_doc bp_job_spec_doc;

/* Parse and validate (types, ranges, unknown keys, budget syntax, format
 * names, metric/method names). Paths are not opened here. `source` names
 * the spec in messages (e.g. the file name; NULL = "job spec"). */
int bp_job_spec_parse(const char *json, size_t len, const char *source,
                      bp_job_spec_doc **out, bp_error *err);
const bp_job_spec *bp_job_spec_get(const bp_job_spec_doc *d);
void bp_job_spec_doc_destroy(bp_job_spec_doc **d);

/* Serialize a spec (as the CLI builds it) to JSON text, malloc'ed. The
 * budget is written from its exact text form. */
char *bp_job_spec_to_json(const bp_job_spec *s, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
