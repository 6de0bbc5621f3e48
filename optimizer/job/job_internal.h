/* Shared between the job module's files; not public. */
#ifndef BITPLAN_JOB_INTERNAL_H
#define BITPLAN_JOB_INTERNAL_H

#include "bitplan/job.h"

#define BP_JOB_VERSION "0.1.0"

/* Sweep one tensor over its allowed formats and append one table row per
 * format. colw: importance per input channel or NULL. */
int bp__job_measure_tensor(const bp_tensor_info *ti, const bp_selected_tensor *st,
                           const float *colw, bp_table *t, bp_error *err);

#endif
