/* bitplan: 16-bit float conversions shared by readers, kernels and writers.
 * All float -> 16-bit conversions round to nearest, ties to even; NaN stays
 * NaN and overflow goes to infinity (f16) as IEEE 754 specifies. */
#ifndef BITPLAN_HALF_H
#define BITPLAN_HALF_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

float bp_f16_to_f32(uint16_t h);
uint16_t bp_f32_to_f16(float f);
float bp_bf16_to_f32(uint16_t h);
uint16_t bp_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
#endif
