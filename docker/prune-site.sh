#!/bin/sh
# Leave out of an image's layer what it never runs (same RUN as the pip install, or the files stay
# in the layer): the test suites packages ship inside themselves (*/tests: pandas 46 MB, scipy,
# numpy, pyarrow...), torch's C++ tests (torch/test, 83 MB; the test programs and libraries in
# torch/bin and torch/lib, 45 MB) and headers (torch/include, 62 MB; no extension is compiled at
# run time).
set -eu
site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
find "$site" -mindepth 2 -type d -name tests -prune -exec rm -rf {} +
rm -rf "$site/torch/test" "$site/torch/include"
if [ -d "$site/torch/bin" ]; then
  find "$site/torch/bin" -maxdepth 1 -type f \( -name 'test_*' -o -name '*Test' \) -delete
  find "$site/torch/lib" -maxdepth 1 -type f -name '*test*.so' -delete
fi
