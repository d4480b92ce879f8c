// Accessible tabs (WAI-ARIA tabs pattern): buttons with role=tab, arrow keys move between them.
import { h } from "../dom.js";

// tabs: [{id, label, render(panel) -> cleanup?}]; onSelect(id) is told of each choice.
export function tabView(tabs, initial, onSelect) {
  const list = h("div.tablist", { role: "tablist", "aria-label": "Instance sections" });
  const panel = h("section.tabpanel", { role: "tabpanel", tabindex: "0" });
  let cleanup = null;
  const buttons = tabs.map((tab, index) => h("button.tab", {
    type: "button", role: "tab", id: `tab-${tab.id}`, dataset: { tab: tab.id },
    "aria-controls": "tabpanel", onclick: () => select(index, true),
    onkeydown: (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) select((index + step + tabs.length) % tabs.length, true, true);
    },
  }, tab.label));
  list.append(...buttons);
  panel.id = "tabpanel";

  function select(index, user = false, focus = false) {
    if (cleanup) cleanup();
    cleanup = null;
    buttons.forEach((b, i) => {
      b.setAttribute("aria-selected", String(i === index));
      b.tabIndex = i === index ? 0 : -1;
    });
    if (focus) buttons[index].focus();
    panel.setAttribute("aria-labelledby", buttons[index].id);
    panel.replaceChildren();
    cleanup = tabs[index].render(panel) || null;
    if (user && onSelect) onSelect(tabs[index].id);
  }

  const start = Math.max(0, tabs.findIndex((t) => t.id === initial));
  return {
    element: h("div.tabs", {}, list, panel),
    start: () => select(start),
    close: () => { if (cleanup) cleanup(); cleanup = null; },
  };
}
