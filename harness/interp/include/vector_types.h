// Shadows the toolkit header of this name in interpret mode: everything lives in wbcpu.h.
#pragma once
#include "wbcpu.h"
