#!/bin/sh
# System packages for the PACS integration tests and benchmarks: Orthanc (+ DICOMweb, GDCM
# plugins), dcmtk (storescu, echoscu, findscu, movescu, dcmcjpeg...), dicom3tools (dciodvfy),
# GDCM tools (gdcmconv). The Orthanc service is not started: the test fixtures run their own
# private instance on 127.0.0.1 (scripts/ci/orthanc.py). mricron-data: a real T1 brain (ch2) with
# AAL/Brodmann label maps on its grid, the anatomy of the segmentation demo (imaging.volumes).
# rsyslog + rsyslog-gnutls: the audit repository the ATNA export tests send to (UDP, TCP, TLS);
# the tests run their own rsyslogd on 127.0.0.1, never the system service.
set -eu
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v Orthanc >/dev/null || ! command -v storescu >/dev/null \
   || ! command -v dciodvfy >/dev/null || ! command -v gdcmconv >/dev/null \
   || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] \
   || [ ! -e /usr/share/mricron/templates/ch2.nii.gz ] \
   || ! command -v rsyslogd >/dev/null || ! dpkg -s rsyslog-gnutls >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends \
    orthanc orthanc-dicomweb orthanc-gdcm dcmtk dicom3tools libgdcm-tools mricron-data \
    rsyslog rsyslog-gnutls
fi
# Tesseract 5 language data for burned-in text screening (the tesserocr wheel brings the engine;
# eng.traineddata comes from Debian's tesseract-ocr-eng, Apache-2.0).
if [ ! -e /usr/share/tesseract-ocr/5/tessdata/eng.traineddata ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends tesseract-ocr tesseract-ocr-eng
fi
# OpenCV's shared libraries for RapidOCR, the default burned-in text engine (the opencv-python
# wheel links libGL and GLib; a minimal Debian has neither).
if ! dpkg -s libgl1 >/dev/null 2>&1 || ! dpkg -s libglib2.0-0 >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends libgl1 libglib2.0-0
fi
# Debian's package may start the system service; the tests never use it.
if command -v service >/dev/null 2>&1; then
  $SUDO service orthanc stop >/dev/null 2>&1 || true
  $SUDO service rsyslog stop >/dev/null 2>&1 || true
fi
Orthanc --version | head -n 1
storescu --version | head -n 1
