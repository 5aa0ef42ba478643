# Runs one test program on the emulated device in three thread orders (forward, reverse, a seeded
# shuffle: kernels/cuda/emu/device.h) and requires bitwise-identical results: the digest of every
# byte the device returned to the host (PPO_EMU_DIGEST) must agree. A missing barrier or an
# order-dependent reduction shows up as a difference.
#   cmake -DPROGRAM=<test binary> -DWORK=<directory> -P thread_orders.cmake
file(MAKE_DIRECTORY ${WORK})
set(first "")
foreach(order forward reverse shuffle:11)
  string(MAKE_C_IDENTIFIER ${order} tag)
  set(ENV{PPO_EMU_ORDER} ${order})
  set(ENV{PPO_EMU_DIGEST} ${WORK}/${tag}.digest)
  file(REMOVE ${WORK}/${tag}.digest)
  execute_process(COMMAND ${PROGRAM} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${PROGRAM} failed with the threads in ${order} order:\n${out}")
  endif()
  file(READ ${WORK}/${tag}.digest digest)
  string(STRIP "${digest}" digest)
  message(STATUS "${order}: digest ${digest}")
  if(first STREQUAL "")
    set(first "${digest}")
    message("${out}")
  elseif(NOT digest STREQUAL first)
    message(FATAL_ERROR "results differ between thread orders: forward ${first}, ${order} ${digest}")
  endif()
endforeach()
