// cp.async for the emulator, written from the PTX ISA (cp.async, cp.async.commit_group,
// cp.async.wait_group / wait_all):
//   cp.async.{ca,cg}.shared.global [dst], [src], cp-size, src-size
// copies src-size bytes (0 <= src-size <= cp-size; cp-size 4, 8 or 16, only 16 for .cg)
// and fills the rest of cp-size with zeros. The copy is asynchronous: the ISA promises its
// result to the issuing thread only after a cp.async.wait_group that covers its group, and
// to other threads only through a barrier after that wait. commit_group closes the thread's
// uncommitted copies into a group; wait_group N waits until at most the N most recent
// committed groups are pending (uncommitted copies are not waited for).
//
// The emulation holds every copy back until the wait that covers it, the latest moment the
// ISA allows: a kernel that reads its destination too early reads the old bytes (NaN for
// fresh shared memory), and one that forgets to commit or wait never sees its data, so the
// tests see the mistake. Copies still pending when a thread issues its first cp.async in
// another block stop the run (a kernel must wait for its copies before it ends).
#pragma once

#include <cstdint>
#include <cstring>
#include <deque>
#include <vector>

#include "cuda_emulator.h"

namespace emu {

struct AsyncCopy {
  void* dst;
  const void* src;
  int size, src_size;
};

struct AsyncCopies {
  std::vector<AsyncCopy> open;                // issued, not yet committed
  std::deque<std::vector<AsyncCopy>> groups;  // committed, oldest first
  const Block* block = nullptr;
  dim3 block_index;
};
inline thread_local AsyncCopies async_copies;

// The calling thread's state, after checking that nothing is left over from another block.
inline AsyncCopies& thread_async_copies() {
  AsyncCopies& a = async_copies;
  const Block* block = &current_block();
  const bool same = a.block == block && a.block_index.x == blockIdx.x && a.block_index.y == blockIdx.y &&
                    a.block_index.z == blockIdx.z;
  if (!same) {
    if (!a.open.empty() || !a.groups.empty()) fail("cp.async copies were still pending when their block ended");
    a.block = block;
    a.block_index = blockIdx;
  }
  return a;
}

inline void cp_async(void* dst, const void* src, int cp_size, int src_size) {
  if (cp_size != 4 && cp_size != 8 && cp_size != 16) fail("cp.async: cp-size must be 4, 8 or 16");
  if (src_size < 0 || src_size > cp_size) fail("cp.async: src-size must lie in [0, cp-size]");
  if (reinterpret_cast<uintptr_t>(dst) % cp_size != 0 || reinterpret_cast<uintptr_t>(src) % cp_size != 0) {
    fail("cp.async: both addresses must be aligned to cp-size");
  }
  thread_async_copies().open.push_back({dst, src, cp_size, src_size});
}

inline void cp_async_commit_group() {
  AsyncCopies& a = thread_async_copies();
  a.groups.push_back(std::move(a.open));
  a.open.clear();
}

inline void cp_async_wait_group(int pending) {
  AsyncCopies& a = thread_async_copies();
  while (static_cast<int>(a.groups.size()) > pending) {
    for (const AsyncCopy& c : a.groups.front()) {
      std::memcpy(c.dst, c.src, static_cast<size_t>(c.src_size));
      std::memset(static_cast<unsigned char*>(c.dst) + c.src_size, 0, static_cast<size_t>(c.size - c.src_size));
    }
    a.groups.pop_front();
  }
}

// cp.async.wait_all: commit_group, then wait_group 0.
inline void cp_async_wait_all() {
  cp_async_commit_group();
  cp_async_wait_group(0);
}

}  // namespace emu
