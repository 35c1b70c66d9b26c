{
  # The slide-reader addon: OpenSlide, loaded at run time with dlopen (no libtorch, no OpenSlide headers at build
  # time), so the package builds and loads on machines without OpenSlide and says so when asked for a slide.
  "targets": [
    {
      "target_name": "g2l_slides",
      "sources": ["<!@(node -p \"require('fs').readdirSync('native/slides').filter(f => f.endsWith('.cpp')).map(f => 'native/slides/' + f).join(' ')\")"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O2"],
      "libraries": ["-ldl"],
      "xcode_settings": {"GCC_ENABLE_CPP_EXCEPTIONS": "YES", "CLANG_CXX_LANGUAGE_STANDARD": "c++17"}
    }
  ]
}
