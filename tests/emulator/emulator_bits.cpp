// The emulator's half of benchmarks/gpu_vs_emulator.py: reads the fp32 cases that the
// script wrote (cases.txt and raw little-endian tensors in one directory), runs them
// through the emulated kernels, and writes each case's output next to its inputs
// (<name>.emu.bin, and <name>.emu_counts.bin for select_dampen_). The script then compares
// these bits with the real CUDA ops'. No ATen here.
//
//   emulator_bits DIR
//
// cases.txt, one case per line (scale, alpha and lam as C hex floats, exact):
//   select NAME ALPHA LAM N SIZE...        files NAME.p.bin NAME.f.bin NAME.d.bin (concatenated)
//   sq     NAME SCALE ABSOLUTE N SIZE...   files NAME.imp.bin NAME.g.bin
//   tokens NAME B T K O TRANSPOSED SMS ABSOLUTE SCALE            files NAME.{x,dy,out0}.bin
//   conv   NAME B C H W O KH KW SH SW PH PW DH DW GROUPS CHANNELS_LAST SMS ABSOLUTE SCALE
// x and dy are stored as the script made them: [B, T, F] (or [B, F, T] when TRANSPOSED)
// and [B, C, H, W] (or [B, H, W, C] when CHANNELS_LAST).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "per_sample_cases.h"

namespace {

using namespace emu_test;

std::vector<float> read_floats(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::vector<float> v(n);
  if (!in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(4 * n))) {
    throw std::runtime_error("cannot read " + std::to_string(n) + " floats from " + path);
  }
  return v;
}

template <class T>
void write_raw(const std::string& path, const std::vector<T>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(sizeof(T) * v.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

float hex_float(const std::string& s) { return static_cast<float>(std::strtod(s.c_str(), nullptr)); }

// One list of tensors stored back to back; pointers into it per tensor.
std::vector<float*> split(std::vector<float>& all, const std::vector<int64_t>& sizes) {
  std::vector<float*> ptr;
  size_t at = 0;
  for (int64_t n : sizes) {
    ptr.push_back(all.data() + at);
    at += static_cast<size_t>(n);
  }
  return ptr;
}

size_t total(const std::vector<int64_t>& sizes) {
  size_t n = 0;
  for (int64_t s : sizes) n += static_cast<size_t>(s);
  return n;
}

void run_select(const std::string& dir, std::istringstream& line) {
  std::string name, alpha, lam;
  size_t count = 0;
  line >> name >> alpha >> lam >> count;
  std::vector<int64_t> sizes(count);
  for (auto& s : sizes) line >> s;
  const size_t n = total(sizes);
  std::vector<float> p = read_floats(dir + "/" + name + ".p.bin", n), f = read_floats(dir + "/" + name + ".f.bin", n),
                     d = read_floats(dir + "/" + name + ".d.bin", n);
  std::vector<unsigned long long> counts(count, 0);
  select_dampen<float>(split(p, sizes), split(f, sizes), split(d, sizes), sizes, hex_float(alpha), hex_float(lam),
                       counts.data());
  write_raw(dir + "/" + name + ".emu.bin", p);
  std::vector<int64_t> counts64(counts.begin(), counts.end());
  write_raw(dir + "/" + name + ".emu_counts.bin", counts64);
}

void run_sq(const std::string& dir, std::istringstream& line) {
  std::string name, scale;
  int absolute = 0;
  size_t count = 0;
  line >> name >> scale >> absolute >> count;
  std::vector<int64_t> sizes(count);
  for (auto& s : sizes) line >> s;
  const size_t n = total(sizes);
  std::vector<float> imp = read_floats(dir + "/" + name + ".imp.bin", n), g = read_floats(dir + "/" + name + ".g.bin", n);
  std::vector<float*> gp = split(g, sizes);
  sq_accumulate<float>(split(imp, sizes), gp, sizes, hex_float(scale), absolute != 0);
  write_raw(dir + "/" + name + ".emu.bin", imp);
}

// Strides of sizes stored in memory order `order` (order[0] outermost), as random_strided.
Strided4<float> stored(const std::string& path, const int64_t (&sizes)[4], const int (&order)[4]) {
  Strided4<float> t{};
  int64_t step = 1;
  for (int i = 3; i >= 0; --i) {
    t.size[order[i]] = sizes[order[i]];
    t.stride[order[i]] = step;
    step *= sizes[order[i]];
  }
  t.data = read_floats(path, static_cast<size_t>(step));
  return t;
}

void run_tokens_case(const std::string& dir, std::istringstream& line) {
  TokensSpec c{};
  std::string scale;
  int transposed = 0, absolute = 0;
  line >> c.name >> c.batch >> c.tokens >> c.in_features >> c.out_features >> transposed >> c.sms >> absolute >> scale;
  c.transposed = transposed != 0;
  c.absolute = absolute != 0;
  c.scale = hex_float(scale);
  const int btf[4] = {0, 1, 2, 3}, bft[4] = {0, 2, 1, 3};
  const int64_t xs[4] = {c.batch, c.tokens, c.in_features, 1}, ys[4] = {c.batch, c.tokens, c.out_features, 1};
  const TokensInputs<float> in{stored(dir + "/" + c.name + ".x.bin", xs, c.transposed ? bft : btf),
                               stored(dir + "/" + c.name + ".dy.bin", ys, c.transposed ? bft : btf)};
  std::vector<float> out = read_floats(dir + "/" + c.name + ".out0.bin", static_cast<size_t>(c.out_features * c.in_features));
  run_tokens(c, in, out.data());
  write_raw(dir + "/" + c.name + ".emu.bin", out);
}

void run_conv_case(const std::string& dir, std::istringstream& line) {
  ConvSpec c{};
  std::string scale;
  int channels_last = 0, absolute = 0;
  line >> c.name >> c.batch >> c.channels >> c.height >> c.width >> c.out_channels >> c.kh >> c.kw >> c.sh >> c.sw >>
      c.ph >> c.pw >> c.dh >> c.dw >> c.groups >> channels_last >> c.sms >> absolute >> scale;
  c.channels_last = channels_last != 0;
  c.absolute = absolute != 0;
  c.scale = hex_float(scale);
  const int64_t oh = conv_out_size(c.height, c.kh, c.sh, c.ph, c.dh), ow = conv_out_size(c.width, c.kw, c.sw, c.pw, c.dw);
  const int nchw[4] = {0, 1, 2, 3}, nhwc[4] = {0, 2, 3, 1};
  const int64_t xs[4] = {c.batch, c.channels, c.height, c.width}, ys[4] = {c.batch, c.out_channels, oh, ow};
  const ConvInputs<float> in{stored(dir + "/" + c.name + ".x.bin", xs, c.channels_last ? nhwc : nchw),
                             stored(dir + "/" + c.name + ".dy.bin", ys, c.channels_last ? nhwc : nchw),
                             {c.kh, c.kw, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.groups, c.channels / c.groups, c.height,
                              c.width, oh, ow}};
  const size_t outputs = static_cast<size_t>(c.out_channels * (c.channels / c.groups) * c.kh * c.kw);
  std::vector<float> out = read_floats(dir + "/" + c.name + ".out0.bin", outputs);
  run_conv(c, in, out.data());
  write_raw(dir + "/" + c.name + ".emu.bin", out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR (with DIR/cases.txt, written by benchmarks/gpu_vs_emulator.py)\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::ifstream cases(dir + "/cases.txt");
  if (!cases) {
    std::fprintf(stderr, "emulator_bits: no %s/cases.txt\n", dir.c_str());
    return 2;
  }
  int ran = 0;
  try {
    for (std::string text; std::getline(cases, text);) {
      std::istringstream line(text);
      std::string kind;
      if (!(line >> kind)) continue;
      if (kind == "select") {
        run_select(dir, line);
      } else if (kind == "sq") {
        run_sq(dir, line);
      } else if (kind == "tokens") {
        run_tokens_case(dir, line);
      } else if (kind == "conv") {
        run_conv_case(dir, line);
      } else {
        throw std::runtime_error("unknown case kind '" + kind + "'");
      }
      ++ran;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "emulator_bits: %s\n", e.what());
    return 1;
  }
  std::printf("emulator_bits: %d cases run\n", ran);
  return 0;
}
