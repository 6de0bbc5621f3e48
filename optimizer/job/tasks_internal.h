/* Task kinds and the plan driver: shared helpers. */
#ifndef BITPLAN_TASKS_INTERNAL_H
#define BITPLAN_TASKS_INTERNAL_H

#include <msgpack.h>

#include "bitplan/error.h"

char *bp__mp_strdup(const msgpack_object *map, const char *key, int required, bp_error *err);
/* An optional string param: absent or nil leaves *out NULL; any other type
 * is an error (params come from the network). */
int bp__mp_opt_strdup(const msgpack_object *map, const char *key, char **out, bp_error *err);
void bp__pack_str(msgpack_packer *pk, const char *key, const char *value);
void bp__pack_key(msgpack_packer *pk, const char *key);
void bp__tasks_register_builtin(void);
void bp__tasks_drop_caches(void);
void bp__tasks_register_eval(void); /* "evaluate" and "measure_kv" (task_eval.c) */
void bp__tasks_register_blocks(void); /* "measure_blocks" (task_blocks.c) */

#endif
