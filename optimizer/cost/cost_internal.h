/* Helpers shared by the cost model files (not public). */
#ifndef BITPLAN_COST_INTERNAL_H
#define BITPLAN_COST_INTERNAL_H

#include "bitplan/cost.h"

/* BP_OK when f is exactly what bp_format_parse(f->name) gives, so a
 * hand-made or corrupted bp_format cannot reach the formulas. */
int bp__cost_check_format(const bp_format *f, bp_error *err);

#endif
