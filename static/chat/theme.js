/*
 * Light or dark: the system's choice (prefers-color-scheme) until the person
 * picks one with the header's toggle; the pick is kept in localStorage
 * ("parley:theme" = "light" | "dark") and set as <html data-theme="...">,
 * which static/chat/style.css reads. Loaded in <head> without `defer`, so the
 * stored theme applies before the first paint (no light flash in dark mode).
 */
(function () {
  "use strict";

  var STORAGE_KEY = "parley:theme";
  var systemDark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  function storedTheme() {
    try {
      var value = localStorage.getItem(STORAGE_KEY);
      return value === "light" || value === "dark" ? value : null;
    } catch (error) {
      return null; // storage unavailable: follow the system
    }
  }

  function storeTheme(theme) {
    try {
      localStorage.setItem(STORAGE_KEY, theme);
    } catch (error) {
      /* the choice then lasts for this page only */
    }
  }

  function effectiveTheme() {
    var chosen = document.documentElement.dataset.theme;
    if (chosen === "light" || chosen === "dark") return chosen;
    return systemDark && systemDark.matches ? "dark" : "light";
  }

  function applyTheme(theme) {
    if (theme) document.documentElement.dataset.theme = theme;
    else delete document.documentElement.dataset.theme;
  }

  function showToggleState(button) {
    var dark = effectiveTheme() === "dark";
    button.setAttribute("aria-pressed", dark ? "true" : "false");
    button.title = dark ? "Switch to the light theme" : "Switch to the dark theme";
  }

  function setUpThemeToggle() {
    var button = document.getElementById("theme-toggle");
    if (!button) return;
    button.hidden = false;
    showToggleState(button);
    button.addEventListener("click", function () {
      var next = effectiveTheme() === "dark" ? "light" : "dark";
      applyTheme(next);
      storeTheme(next);
      showToggleState(button);
    });
    if (systemDark && systemDark.addEventListener) {
      systemDark.addEventListener("change", function () {
        showToggleState(button);
      });
    }
  }

  applyTheme(storedTheme());
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUpThemeToggle);
  } else {
    setUpThemeToggle();
  }
})();
