#!/usr/bin/env node
// The CLI lives in dist/ once built; this file exists before the build, so pnpm can link the bin at install.
import '../dist/cli.js';
