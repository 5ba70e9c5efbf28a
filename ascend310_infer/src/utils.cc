/**
 * Helpers of the IPT Ascend 310 runner (see inc/utils.h).
 */
#include "inc/utils.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>

namespace {

bool EndsWith(const std::string &text, const std::string &suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool ParseInt(const std::string &text, int *value) {
  if (text.empty()) {
    return false;
  }
  char *end = nullptr;
  errno = 0;
  long parsed = std::strtol(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || parsed < 0 || parsed > INT_MAX) {
    return false;
  }
  *value = static_cast<int>(parsed);
  return true;
}

}  // namespace

bool ParseOptions(int argc, char **argv, InferOptions *options, std::string *error) {
  std::map<std::string, std::string *> strings = {{"mindir_path", &options->mindir_path},
                                                  {"input_path", &options->input_path},
                                                  {"output_path", &options->output_path},
                                                  {"precision_mode", &options->precision_mode}};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      *error = "unexpected argument '" + arg + "'";
      return false;
    }
    std::string key = arg.substr(2);
    std::string value;
    size_t eq = key.find('=');
    if (eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      *error = "--" + key + " needs a value";
      return false;
    }
    if (key == "device_id") {
      if (!ParseInt(value, &options->device_id)) {
        *error = "--device_id must be a non-negative integer, not '" + value + "'";
        return false;
      }
    } else if (strings.count(key) != 0) {
      *strings[key] = value;
    } else {
      *error = "unknown option --" + key;
      return false;
    }
  }
  if (options->mindir_path.empty() || options->input_path.empty()) {
    *error = "--mindir_path and --input_path are required";
    return false;
  }
  return true;
}

std::string RealPath(const std::string &path) {
  char resolved[PATH_MAX] = {0};
  if (path.empty() || realpath(path.c_str(), resolved) == nullptr) {
    return "";
  }
  return std::string(resolved);
}

bool IsDirectory(const std::string &path) {
  struct stat info {};
  return stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool MakeDirectories(const std::string &path) {
  if (path.empty() || IsDirectory(path)) {
    return !path.empty();
  }
  size_t slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0 && !MakeDirectories(path.substr(0, slash))) {
    return false;
  }
  return mkdir(path.c_str(), 0755) == 0 || IsDirectory(path);
}

std::vector<std::string> ListBinFiles(const std::string &dir) {
  std::vector<std::string> names;
  DIR *handle = opendir(dir.c_str());
  if (handle == nullptr) {
    return names;
  }
  for (struct dirent *entry = readdir(handle); entry != nullptr; entry = readdir(handle)) {
    std::string name = entry->d_name;
    struct stat info {};
    if (EndsWith(name, ".bin") && stat(JoinPath(dir, name).c_str(), &info) == 0 && S_ISREG(info.st_mode)) {
      names.push_back(name);
    }
  }
  closedir(handle);
  std::sort(names.begin(), names.end());
  return names;
}

std::string JoinPath(const std::string &dir, const std::string &name) {
  if (dir.empty() || dir.back() == '/') {
    return dir + name;
  }
  return dir + "/" + name;
}

bool ReadBinaryFile(const std::string &path, std::vector<uint8_t> *data) {
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) {
    return false;
  }
  std::streamsize size = file.tellg();
  if (size < 0) {
    return false;
  }
  data->resize(static_cast<size_t>(size));
  file.seekg(0, std::ios::beg);
  return size == 0 || static_cast<bool>(file.read(reinterpret_cast<char *>(data->data()), size));
}

bool WriteBinaryFile(const std::string &path, const void *data, size_t size) {
  std::string tmp = path + ".part";  // a killed run never leaves a truncated output under the real name
  {
    std::ofstream file(tmp, std::ios::binary | std::ios::trunc);
    if (!file || !file.write(static_cast<const char *>(data), static_cast<std::streamsize>(size))) {
      return false;
    }
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}
